"""What a user sees of the entry scripts: --help without MindSpore, defaults shown, one-line errors naming real
paths, and no spurious MindSpore warnings on stderr."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FINETUNE_STEP = '''
import numpy as np

from smallbert import BertConfig
from smallbert.finetune.loop import ClassifierWithLoss
from smallbert.model import BertForSequenceClassification
from smallbert.optim import build_optimizer
from smallbert.train import TrainStep

config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64)
model = BertForSequenceClassification(config)
model.set_train(True)
step = TrainStep(ClassifierWithLoss(model), build_optimizer("adamw", model.trainable_params(), 1e-3))
ids = np.random.default_rng(0).integers(0, 128, (4, 16)).astype(np.int32)
out = step.step(ids, np.zeros_like(ids), np.ones_like(ids), np.array([0, 1, 0, 1], np.int32))
print(f"loss {out.loss:.4f}")
'''


def run(argv: list[str], cwd: str) -> subprocess.CompletedProcess:
    """Runs a Python command with this checkout's sources first; captures stdout and file descriptor 2."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_finetune_step_prints_no_side_effect_warning(tmp_path):
    # MindSpore's graph compiler warned "Some side effect nodes were eliminated by mistake" on every fine-tune
    # graph: the classifier unpacked BertModel's (sequence_output, pooled_output) and dropped the first.
    # The warning comes from C++ on fd 2, so only a subprocess sees it.
    (tmp_path / "finetune_step.py").write_text(FINETUNE_STEP)  # graph mode compiles from a source file
    result = run(["finetune_step.py"], str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loss ")
    assert "side effect nodes" not in result.stderr
