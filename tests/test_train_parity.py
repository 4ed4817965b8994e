"""Training parity with transformers: 20 steps of our pretraining loop against the PyTorch reference of
bench/train_parity.py (Google's AdamWeightDecay, the paper's LAMB), same initial weights and batches, dropout off."""
import dataclasses
import importlib.util
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("train_parity", os.path.join(REPO, "bench", "train_parity.py"))
parity = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = parity  # dataclasses look their module up there
_spec.loader.exec_module(parity)

STEPS, BATCH, WARMUP = 20, 8, 5
LEARNING_RATES = {"adamw": 1e-3, "lamb": 1e-2}


def make_run(optimizer: str) -> "parity.Run":
    return parity.Run(optimizer, STEPS, BATCH, LEARNING_RATES[optimizer], WARMUP)


@pytest.fixture(scope="module")
def start(tmp_path_factory, tiny_config):
    """Shards of the bundled sample, the tiny config with its vocabulary, and our initial weights as ours and HF."""
    root = tmp_path_factory.mktemp("parity")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # module fixtures run before conftest's per-test chdir
        data_dir = parity.sample_shards(str(root / "data"))
        config = dataclasses.replace(tiny_config, vocab_size=1051)  # sample/vocab.txt
        ours_dir, hf_dir = parity.initial_weights(config, str(root), seed=3)
        batches = parity.loop_batches(data_dir, make_run("adamw"), config.vocab_size)
    return root, data_dir, ours_dir, hf_dir, batches


@pytest.fixture(scope="module", params=["adamw", "lamb"])
def trained(request, start):
    """(run, ours, the reference's) `parity.Trained` after STEPS steps."""
    root, data_dir, ours_dir, hf_dir, batches = start
    run = make_run(request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        ours = parity.train_ours(data_dir, ours_dir, str(root / f"run_{run.optimizer}"), run)
    return run, ours, parity.train_reference(hf_dir, batches, run)


def test_batches_are_real_with_padded_predictions(start):
    batches = start[-1]
    weights = np.concatenate([b["masked_lm_weights"] for b in batches])
    assert len(batches) == STEPS and set(np.unique(weights)) == {0.0, 1.0}
    padded = weights == 0
    positions = np.concatenate([b["masked_lm_positions"] for b in batches])
    assert 0.02 < padded.mean() < 0.5 and (positions[padded] == 0).all() and (positions[~padded] > 0).all()


def test_training_matches_transformers(trained, start):
    run, ours, reference = trained
    diff = parity.compare(ours, reference)
    assert diff["mlm_rel"] <= 1e-3 and diff["nsp_rel"] <= 1e-3, diff
    assert diff["weight"] <= 1e-4, diff
    # The comparison means something: the weights moved far beyond the tolerance, the loss fell, and clipping
    # was active (the global gradient norm is ~1.1-1.8 on these steps).
    assert parity.weight_change(start[2], ours.weights) > 1e-2
    assert ours.losses[-5:].sum(1).mean() < ours.losses[:5].sum(1).mean() - 0.05
    assert (reference.grad_norms > run.max_grad_norm).any()


class BiasCorrectedAdamW(torch.optim.AdamW):
    """torch's AdamW with Google's exclusions and eps: differs from Google's AdamWeightDecay only by the bias
    correction of m and v."""

    def __init__(self, named_params, weight_decay):
        super().__init__([{"params": [p], "weight_decay": 0.0 if parity.google_excluded(n) else weight_decay}
                          for n, p in named_params], lr=0.0, eps=1e-6)

    def step(self, lr):
        for group in self.param_groups:
            group["lr"] = lr
        super().step()


class LambAdaptingEverything(parity.Lamb):
    """The deviation of issue 14 item 1: the trust ratio also for LayerNorm and bias parameters."""

    @staticmethod
    def adapts(name):
        return True


def test_tolerances_tell_the_known_deviations_apart(trained, start):
    """The same reference with the bias-corrected torch AdamW, or with LAMB adapting every tensor, is outside the
    tolerances: they are tight enough to see a wrong optimizer."""
    run, ours, _ = trained
    deviation = {"adamw": BiasCorrectedAdamW, "lamb": LambAdaptingEverything}[run.optimizer]
    diff = parity.compare(ours, parity.train_reference(start[3], start[-1], run, optimizer_class=deviation))
    assert diff["weight"] > 1e-3, diff
