"""Checkpoint directories: atomic layout, keep-newest-K, verification, corrupt fallback, restore (no compile)."""
import logging
import os

import numpy as np
import pytest

from mindspore import Parameter, Tensor
from mindspore.common import dtype as mstype

from smallbert import BertForPreTraining
from smallbert.checkpoint import (find_resume_checkpoint, list_checkpoints, restore_checkpoint, save_checkpoint,
                                  verify_checkpoint)
from smallbert.errors import SmallBertError


def state_params(seed):
    rng = np.random.default_rng(seed)
    return [Parameter(Tensor(rng.normal(size=(3, 2)).astype(np.float32)), name="adam_m.x"),
            Parameter(Tensor(np.array([seed], np.int32)), name="global_step"),
            Parameter(Tensor(2.0 ** seed, mstype.float32), name="loss_scale")]


@pytest.fixture(scope="module")
def models(tiny_config):
    return BertForPreTraining(tiny_config), BertForPreTraining(tiny_config)


def test_save_restore_round_trip(models, tmp_path):
    source, target = models
    run = str(tmp_path / "run")
    path = save_checkpoint(run, 7, source, state_params(3), {"epoch": 1, "sequences_in_epoch": 40})
    assert path == os.path.join(run, "checkpoints", "step_7")
    assert sorted(os.listdir(path)) == ["config.json", "model.ckpt", "trainer_state.json", "training_state.ckpt"]
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if n.startswith(".tmp")]
    restored = state_params(4)
    state = restore_checkpoint(path, target, restored)
    assert (state["step"], state["epoch"], state["sequences_in_epoch"]) == (7, 1, 40)
    for p, q in zip(source.get_parameters(), target.get_parameters()):
        np.testing.assert_array_equal(q.asnumpy(), p.asnumpy(), err_msg=p.name)
    for p, q in zip(state_params(3), restored):
        np.testing.assert_array_equal(q.asnumpy(), p.asnumpy(), err_msg=p.name)
    # Every checkpoint is also a model directory.
    loaded = BertForPreTraining.from_pretrained(path)
    assert not loaded.load_report.missing


def test_keep_newest_and_corrupt_fallback(models, tmp_path, caplog):
    model = models[0]
    run = str(tmp_path / "run")
    for step in (10, 20, 30, 40):
        save_checkpoint(run, step, model, state_params(1), {}, keep_max=3)
    assert [s for s, _ in list_checkpoints(run)] == [20, 30, 40]
    assert find_resume_checkpoint("auto", run).endswith("step_40")
    newest = os.path.join(run, "checkpoints", "step_40", "training_state.ckpt")
    with open(newest, "r+b") as f:
        f.seek(os.path.getsize(newest) // 2)
        f.write(b"\x00garbage\x00")
    with pytest.raises(SmallBertError, match="corrupt"):
        verify_checkpoint(os.path.dirname(newest))
    with caplog.at_level(logging.WARNING, logger="smallbert"):
        assert find_resume_checkpoint("auto", run).endswith("step_30")
    assert "step 40" in caplog.text and "corrupt" in caplog.text
    os.remove(os.path.join(run, "checkpoints", "step_30", "trainer_state.json"))  # as if killed mid-write
    assert find_resume_checkpoint(run, "elsewhere").endswith("step_20")


def test_resume_errors(tmp_path):
    assert find_resume_checkpoint("auto", str(tmp_path / "fresh")) is None
    with pytest.raises(SmallBertError, match="--resume: .*no such"):
        find_resume_checkpoint(str(tmp_path / "missing"), str(tmp_path))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(SmallBertError, match="no valid checkpoint"):
        find_resume_checkpoint(str(tmp_path / "empty_run"), str(tmp_path))
