"""The README's two commands: tools/quickstart.py on the bundled sample, end to end, and the sample itself; the
test command's text (CI runs it), its dependencies, and both commands in a fresh virtual environment (opt-in)."""
from __future__ import annotations

import filecmp
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
SAMPLE = os.path.join(ROOT, "sample")
QUICKSTART = os.path.join(ROOT, "tools", "quickstart.py")
README_COMMANDS = ['pip install -e . && python tools/quickstart.py --overwrite',
                   'pip install -e ".[dev,tf]" && python -m pytest -q']
SAMPLE_FILES = ["wiki/sample-pages-articles.xml.bz2", "vocab.txt", "bert_config.json", "SST-2/train.tsv",
                "SST-2/dev.tsv", "SST-2/test.tsv"]


def test_bundled_sample_is_what_make_sample_writes(tmp_path):
    """The shipped files are reproducible from sample/make_sample.py (our own generated text, our own vocab)."""
    subprocess.run([sys.executable, os.path.join(SAMPLE, "make_sample.py"), "--output_dir", str(tmp_path)],
                   check=True, capture_output=True)
    for name in SAMPLE_FILES:
        assert filecmp.cmp(tmp_path / name, os.path.join(SAMPLE, name), shallow=False), name
    config = json.loads((tmp_path / "bert_config.json").read_text())
    assert config["vocab_size"] == len((tmp_path / "vocab.txt").read_text().splitlines())


# The quickstart as the README runs it (300 pretraining steps, then 6 fine-tuning epochs at lr 2e-4 with seed 1)
# reached a best dev accuracy of 0.94 (CPU, 2 cores; 2026-12-04). Fine-tuning that pretrained model with seeds 1-10:
# lr 2e-4 gave 0.94-0.955 for nine and 0.545 for seed 10 (the classifier stuck on one class); lr 3e-4, the earlier
# default, gave 0.51 (seed 4), 0.81 and 0.76 for three of them; lr 1e-4 stayed lower (0.51-0.94 over seeds 1-5), and a
# longer warmup (30%) at 2e-4 collapsed three of ten. The run is deterministic for its fixed seeds; the floor leaves
# 8 of the 200 dev sentences of margin.
# With 20 pretraining steps, fine-tuning stayed at chance for 1 epoch and for seed 4 over 5, so a shorter run
# could assert nothing.
QUICKSTART_DEV_ACCURACY_FLOOR = 0.90


def test_quickstart_runs_every_stage(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run([sys.executable, QUICKSTART, "--output_dir", str(out), "--processes", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert glob.glob(str(out / "data" / "*.mindrecord")) and (out / "data" / "metadata.json").is_file()
    for name in ("config.json", "model.ckpt", "vocab.txt"):
        assert (out / "pretrain" / "final" / name).is_file(), name
        assert (out / "sst2" / "best" / name).is_file(), name
    steps = [json.loads(line).get("step") for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 300
    for plot in ("pretrain/plots/loss.png", "pretrain/plots/lr.png", "sst2/plots/accuracy.png", "sst2/plots/loss.png"):
        assert (out / plot).stat().st_size > 1000, plot
    accuracy = re.search(r"^SST-2 sample dev accuracy: (\d\.\d{4})$", result.stdout, re.M)
    assert accuracy, result.stdout[-2000:]
    results = json.loads((out / "sst2" / "eval_results.json").read_text())
    assert float(accuracy.group(1)) == round(results["best_dev_accuracy_mean"], 4)
    assert float(accuracy.group(1)) >= QUICKSTART_DEV_ACCURACY_FLOOR, result.stdout[-2000:]


def test_quickstart_keeps_an_earlier_run_unless_told(tmp_path):
    (tmp_path / "qs" / "pretrain").mkdir(parents=True)
    result = subprocess.run([sys.executable, QUICKSTART, "--output_dir", str(tmp_path / "qs")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --output_dir: {tmp_path / 'qs'} already holds pretrain from an earlier run; pass --overwrite to "
        f"replace them or choose another directory"]


def readme_commands() -> list[str]:
    """The lines of the README's first code block."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"^```bash\n(.*?)^```", f.read(), re.M | re.S)
    return block.group(1).strip().splitlines()


def test_readme_commands_and_ci_agree():
    assert readme_commands() == README_COMMANDS
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        commands = [line for line in f.read().splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [README_COMMANDS[1]]


def import_name(name: str, distribution) -> str:
    """The module a distribution is imported as: its own name (tensorflow for tensorflow-cpu), else its first
    public top-level package."""
    name = name.lower().replace("-", "_")
    top_level = (distribution.read_text("top_level.txt") or "").split()
    public = [m for m in top_level if not m.startswith("_")]
    return next((m for m in public if name == m or name.startswith(m + "_")), public[0] if public else name)


def test_every_test_dependency_is_installed_and_imports():
    """What `pip install -e ".[dev,tf]"` promises the tests: each requirement of the extras (for this platform)
    installed in a version it allows, and its top-level module importable."""
    import importlib.metadata as metadata

    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    modules = []
    for text in extras["dev"] + extras["tf"]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = metadata.version(requirement.name)  # raises PackageNotFoundError if it is not installed
        assert requirement.specifier.contains(version, prereleases=True), (text, version)
        modules.append(import_name(requirement.name, metadata.distribution(requirement.name)))
    assert {"pytest", "torch", "transformers", "tensorflow"} <= set(modules)
    # In a process of its own: torch, TensorFlow and MindSpore are each imported as a test would.
    subprocess.run([sys.executable, "-c", "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
                    *modules], check=True, capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SMALLBERT_FRESH_VENV") != "1",
                    reason="~30 min and 5.5 GB of downloads: set SMALLBERT_FRESH_VENV=1 to run")
def test_readme_commands_in_a_fresh_venv(tmp_path):
    """The README's two commands, as written, in order, in a new virtual environment and a copy of the checkout."""
    checkout = tmp_path / "smallbert"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".git", "quickstart_out", "*.egg-info",
                                                                 "__pycache__", "rank_0"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    env = {**os.environ, "PATH": f"{tmp_path / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(tmp_path / "venv"), "SMALLBERT_FRESH_VENV": "0"}
    env.pop("PYTHONPATH", None)
    for command in README_COMMANDS:
        result = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
