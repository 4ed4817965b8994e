"""The pretraining loop end to end on a small real-text corpus: loss falls, eval, exact resume, --mlm_only, bad
input."""
import dataclasses
import importlib.util
import json
import logging
import os
import re

import numpy as np
import pytest

import mindspore as ms

from smallbert import device
from smallbert.config import BertConfig, PretrainConfig
from smallbert.data.instances import InstanceConfig
from smallbert.data.pipeline import PipelineConfig, create_pretraining_data
from smallbert.optim import WarmupPolynomialDecay
from smallbert.errors import SmallBertError
from smallbert.pretrain import check_pretrain_inputs, check_resume, next_event, pretrain
from smallbert.train import StepOutput, TrainStep, run_steps

CORPUS = """\
The river runs from the hills to the sea.
In spring the river is high and fast.
In summer the river is low and slow.
Children play by the water in the summer.
Old men fish from the bridge in the morning.

The town has a small market by the river.
Every morning the farmers bring bread, milk and apples.
People buy fresh bread and apples at the market.
The market is busy in the morning and quiet at night.
At night the lights of the town shine on the water.

A cat lives in the old house on the hill.
The cat sleeps in the sun in the morning.
At night the cat hunts in the garden.
The garden has green trees and red flowers.
Birds sing in the trees in the spring.

The school is near the market in the town.
The children walk to school in the morning.
They read books and learn to write.
After school the children play in the garden.
In the summer the school is closed.

The sea is blue and cold in the winter.
Ships come to the town from the sea.
The ships bring fish, salt and wood.
Men carry the wood from the ships to the market.
In the winter the sea is rough and the ships stay home.

The hills are green in the spring and brown in the summer.
Sheep eat the grass on the hills.
A farmer walks with his dog on the hill in the morning.
The dog runs after the sheep.
At night the sheep sleep near the old house.

The bridge crosses the river near the school.
It is an old stone bridge.
People walk over the bridge to the market.
In the spring the water runs fast under the bridge.
Children throw sticks from the bridge into the river.

The baker opens his shop in the early morning.
He makes bread from wheat, water and salt.
The smell of bread fills the street.
People buy bread for the day.
At night the baker sleeps and the shop is closed.
"""
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_pretrain = load_script("run_pretrain.py")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
STEPS, SAVE_AT = 30, 15


@pytest.fixture(scope="module")
def corpus_shards(tmp_path_factory):
    """Shards made from CORPUS by the data pipeline (seq 32, 5 predictions), a vocab of its words, a config."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "corpus.txt").write_text(CORPUS * 3)
    words = sorted(set(re.findall(r"\w+|[^\w\s]", CORPUS.lower())))
    (root / "vocab.txt").write_text("\n".join(SPECIAL + words) + "\n")
    create_pretraining_data(PipelineConfig(
        input_files=(str(root / "corpus.txt"),), output_dir=str(root / "shards"), vocab_file=str(root / "vocab.txt"),
        instances=InstanceConfig(max_seq_length=32, max_predictions_per_seq=5, dupe_factor=4)))
    config = {"vocab_size": len(SPECIAL) + len(words), "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    (root / "bert_config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def mlm_only_shards(corpus_shards):
    """CORPUS as packed single segments (tools/create_pretraining_data.py --mlm_only), seq 32."""
    out = corpus_shards / "mlm_only"
    create_data = load_script("tools/create_pretraining_data.py")
    assert create_data.main(["--input_file", str(corpus_shards / "corpus.txt"), "--output_dir", str(out),
                             "--vocab_file", str(corpus_shards / "vocab.txt"), "--max_seq_length", "32",
                             "--max_predictions_per_seq", "5", "--dupe_factor", "4", "--mlm_only"]) == 0
    return out


def run_config(root, output_dir, **overrides) -> PretrainConfig:
    values = dict(data_dir=str(root / "shards"), bert_config_file=str(root / "bert_config.json"),
                  output_dir=str(output_dir), train_steps=STEPS, train_batch_size=8, lr=2e-3, warmup_steps=3,
                  save_steps=SAVE_AT, keep_checkpoint_max=2, log_steps=5, eval_data_dir=str(root / "shards"),
                  eval_steps=SAVE_AT, eval_batches=4, vocab_file=str(root / "vocab.txt"), seed=7)
    values.update(overrides)
    return PretrainConfig(**values)


def read_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def load(path):
    return {name: p.asnumpy() for name, p in ms.load_checkpoint(str(path)).items()}


@pytest.fixture(scope="module")
def straight_run(corpus_shards, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(output_dir)  # module fixtures run before conftest's per-test chdir
        results = pretrain(run_config(corpus_shards, output_dir))
    return output_dir, results


def test_loss_falls_and_everything_is_written(straight_run):
    output_dir, results = straight_run
    rows = read_rows(output_dir / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(5, STEPS + 1, 5))
    assert set(train[0]) == {"step", "epoch", "loss", "mlm_loss", "nsp_loss", "lr", "loss_scale", "seq_per_s",
                             "skipped_steps", "overflow_steps"}
    assert train[-1]["loss"] < train[0]["loss"] - 0.5, [r["loss"] for r in train]
    assert train[-1]["loss"] == pytest.approx(train[-1]["mlm_loss"] + train[-1]["nsp_loss"], rel=1e-5)
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, SAVE_AT, STEPS]  # step 0: before the first update
    assert evals[-1]["eval_loss"] < evals[1]["eval_loss"] < evals[0]["eval_loss"]
    assert results["initial_eval_perplexity"] == evals[0]["eval_perplexity"] > results["eval_perplexity"]
    assert 0.0 < results["eval_mlm_accuracy"] <= 1.0 and 0.0 <= results["eval_nsp_accuracy"] <= 1.0
    assert results["eval_perplexity"] == pytest.approx(np.exp(results["eval_mlm_loss"]), rel=1e-6)
    assert results["eval_loss"] == pytest.approx(results["eval_mlm_loss"] + results["eval_nsp_loss"], rel=1e-6)
    checkpoints = sorted(os.listdir(output_dir / "checkpoints"))
    assert checkpoints == [f"step_{SAVE_AT}", f"step_{STEPS}"]
    assert sorted(os.listdir(output_dir / "final")) == ["config.json", "model.ckpt", "vocab.txt"]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


OVERFLOW_STEPS, OVERFLOW_END_LR = 10, 5e-4


@pytest.fixture(scope="module")
def overflow_run(corpus_shards, tmp_path_factory):
    """float16 from a loss scale of 2^40: the gradients overflow, and the scale halves, until they fit in float16.
    Returns (output_dir, the run's log lines)."""
    output_dir = tmp_path_factory.mktemp("overflow")
    logger, collect = logging.getLogger("smallbert"), _Collect()
    level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(output_dir)
            pretrain(run_config(corpus_shards, output_dir, amp="O2", amp_dtype="float16", init_loss_scale=2.0 ** 40,
                                train_steps=OVERFLOW_STEPS, end_lr=OVERFLOW_END_LR, save_steps=0,
                                eval_data_dir=None))
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return output_dir, collect.lines


def test_skipped_steps_are_not_updates(overflow_run):
    """The run makes exactly --train_steps updates and ends at --end_lr however many steps overflowed; the skipped
    steps are logged apart (per row and in total) and their losses left out of the means."""
    output_dir, lines = overflow_run
    train = [r for r in read_rows(output_dir / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in train] == [5, OVERFLOW_STEPS]
    skipped = sum(r["skipped_steps"] for r in train)
    assert skipped >= 5 and train[-1]["overflow_steps"] == skipped
    assert all(np.isfinite(r["loss"]) for r in train)
    checkpoint = output_dir / "checkpoints" / f"step_{OVERFLOW_STEPS}"
    assert int(load(checkpoint / "training_state.ckpt")["global_step"][0]) == OVERFLOW_STEPS
    assert json.loads((checkpoint / "trainer_state.json").read_text())["overflow_steps"] == skipped
    schedule = WarmupPolynomialDecay(2e-3, 3, OVERFLOW_STEPS, OVERFLOW_END_LR)
    assert schedule.value(OVERFLOW_STEPS) == pytest.approx(OVERFLOW_END_LR)
    assert train[-1]["lr"] == pytest.approx(schedule.value(OVERFLOW_STEPS - 1))  # the last update's
    assert f"done: {OVERFLOW_STEPS} updates, {skipped} steps skipped on overflow" in lines[-1]


def test_run_summary_comes_first(corpus_shards, overflow_run):
    output_dir, lines = overflow_run
    summary = [line for line in lines if line.startswith("run summary:")]
    assert len(summary) == 1 and lines.index(summary[0]) < len(lines) - 1
    rows = sum(json.loads((corpus_shards / "shards" / "metadata.json").read_text())["rows_per_file"])
    shards = len([n for n in os.listdir(corpus_shards / "shards") if n.endswith(".mindrecord")])
    parameters = BertConfig.from_json_file(str(corpus_shards / "bert_config.json")).num_parameters(with_heads=True)
    assert parameters == sum(v.size for v in load(output_dir / "final" / "model.ckpt").values())
    assert summary[0].splitlines()[1:] == [
        f"  model:        BertForPreTraining L2-H32-A2, {parameters:,} parameters ({corpus_shards / 'bert_config.json'})",
        f"  data:         {rows:,} sequences of 32 tokens in {shards} shards ({corpus_shards / 'shards'})",
        f"  steps:        {OVERFLOW_STEPS} updates; skipped (overflow) steps are not counted",
        "  global batch: 8 = 8 per micro-batch x 1 accumulation x 1 devices",
        "  devices:      1 x CPU",
        "  precision:    float16 matmuls, float32 master weights (O2), dynamic loss scale from 1.09951e+12",
        "  optimizer:    adamw, eps 1e-06, weight decay 0.01, clip at global norm 1",
        f"  lr schedule:  linear warmup to 0.002 over 3 updates, then linear decay to 0.0005 at update "
        f"{OVERFLOW_STEPS}"]


def test_resume_after_a_crash_matches_a_straight_run(corpus_shards, straight_run, tmp_path, monkeypatch):
    """Killed during step SAVE_AT + 1, resumed from step SAVE_AT: the same weights and optimizer state as
    STEPS uninterrupted steps (the data position, learning-rate position, moments and dropout generators all
    carried over; dropout is on)."""
    output_dir = tmp_path / "resumed"
    calls = {"n": 0}
    launch = TrainStep.launch

    def crash_after_checkpoint(self, *batch):
        calls["n"] += 1
        if calls["n"] > SAVE_AT:
            raise KeyboardInterrupt
        return launch(self, *batch)

    with monkeypatch.context() as patch:
        patch.setattr(TrainStep, "launch", crash_after_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            pretrain(run_config(corpus_shards, output_dir))
    assert os.listdir(output_dir / "checkpoints") == [f"step_{SAVE_AT}"]
    pretrain(run_config(corpus_shards, output_dir, resume="auto"))

    straight = straight_run[0]
    for name in (f"checkpoints/step_{STEPS}/model.ckpt", f"checkpoints/step_{STEPS}/training_state.ckpt"):
        expected, actual = load(straight / name), load(output_dir / name)
        assert set(actual) == set(expected)
        for key in expected:
            np.testing.assert_allclose(actual[key], expected[key], rtol=0, atol=1e-6, err_msg=f"{name}: {key}")
    # One row per step in the log: the rows after the checkpoint were rewritten, not duplicated.
    straight_rows, resumed_rows = read_rows(straight / "metrics.jsonl"), read_rows(output_dir / "metrics.jsonl")
    assert [r["step"] for r in resumed_rows] == [r["step"] for r in straight_rows]
    for a, b in zip(straight_rows, resumed_rows):
        for key in ("loss", "mlm_loss", "lr", "eval_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)


def resume_argv(root, output_dir, *flags):
    return ["--data_dir", str(root / "shards"), "--config", str(root / "bert_config.json"), "--output_dir",
            str(output_dir), "--train_steps", str(STEPS), "--train_batch_size", "8", "--lr", "2e-3",
            "--warmup_steps", "3", "--vocab_file", str(root / "vocab.txt"), "--seed", "7", "--resume", "auto", *flags]


def checked_inputs(cfg: PretrainConfig, world_size: int = 1):
    """What `pretrain` checks before compiling, the resume checks included (one process: no agreement needed)."""
    inputs = check_pretrain_inputs(cfg, world_size)
    check_resume(cfg, inputs, world_size)
    return inputs


def test_resume_with_changed_flags_is_refused_in_one_line(corpus_shards, straight_run, capsys, monkeypatch):
    """Checked before anything is compiled; each changed flag is listed as `--flag old -> new`."""
    monkeypatch.setattr(TrainStep, "__init__", lambda *a, **k: pytest.fail("compiled before refusing"))
    output_dir = straight_run[0]
    wide = corpus_shards / "wide.json"
    wide.write_text(json.dumps({**json.loads((corpus_shards / "bert_config.json").read_text()),
                                "intermediate_size": 128}))
    argv = resume_argv(corpus_shards, output_dir)
    argv[argv.index("--lr") + 1] = "1e-3"
    argv[argv.index("--train_steps") + 1] = "40"
    argv[argv.index("--config") + 1] = str(wide)
    err = cli_error(capsys, argv + ["--warmup_steps", "5", "--optimizer", "lamb", "--amp_dtype", "bfloat16",
                                    "--train_batch_size", "4", "--accumulation_steps", "2", "--adam_epsilon", "1e-8"])
    assert err == (f"error: --resume: {output_dir / 'checkpoints' / f'step_{STEPS}'} was trained with other "
                   f"settings: --lr 0.002 -> 0.001, --warmup_steps 3 -> 5, --train_steps {STEPS} -> 40, "
                   f"--optimizer adamw -> lamb, --adam_epsilon 1e-06 -> 1e-08, --amp_dtype float16 -> bfloat16, "
                   f"--train_batch_size 8 -> 4, "
                   f"--accumulation_steps 1 -> 2, --config intermediate_size 64 -> 128; pass --resume_force to "
                   f"continue with the new ones")
    epochs = resume_argv(corpus_shards, output_dir)
    epochs[epochs.index("--train_steps"):epochs.index("--train_steps") + 2] = ["--epochs", "1"]
    assert cli_error(capsys, epochs).endswith(f"--train_steps {STEPS} -> unset, --epochs unset -> 1; pass "
                                              f"--resume_force to continue with the new ones")
    with pytest.raises(SmallBertError, match=r"settings: world size 1 -> 2; pass --resume_force"):
        checked_inputs(run_config(corpus_shards, output_dir, resume="auto"), world_size=2)


def test_resume_flags_that_may_change(corpus_shards, straight_run, monkeypatch):
    monkeypatch.setattr(TrainStep, "__init__", lambda *a, **k: pytest.fail("compiled"))
    inputs = checked_inputs(run_config(corpus_shards, straight_run[0], resume="auto", save_steps=7,
                                              log_steps=1, keep_checkpoint_max=0, eval_steps=3, eval_batches=1,
                                              eval_data_dir=None, verify_data="fast", jit=False))
    assert inputs.resume_path.endswith(f"step_{STEPS}")


def test_resume_force_warns_with_the_changes_and_the_schedule(corpus_shards, straight_run, caplog):
    """--resume_force continues, warning with the same list, and with the schedule change: here the decay
    stretched from 30 to 60 updates raises the learning rate at update 30 from 0 (the end) back to ~1e-3."""
    cfg = run_config(corpus_shards, straight_run[0], resume="auto", resume_force=True, train_steps=2 * STEPS)
    with caplog.at_level(logging.WARNING, logger="smallbert"):
        checked_inputs(cfg)
    assert f"changed settings: --train_steps {STEPS} -> {2 * STEPS}" in caplog.text
    expected = WarmupPolynomialDecay(2e-3, 3, 2 * STEPS).value(STEPS)
    assert (f"learning-rate schedule changes at update {STEPS}: lr 0.000e+00 -> {expected:.3e} (peak 0.002, "
            f"warmup 3, end 0 at update {STEPS} -> peak 0.002, warmup 3, end 0 at update {2 * STEPS})") in caplog.text


def test_epochs_on_another_world_size_is_not_restretched_silently(corpus_shards, straight_run, tmp_path, caplog):
    """A run of --epochs 2 on one device, resumed on two: an epoch is half the updates, so the schedule would
    shrink to half its length. Refused; forced, the new length is shown."""
    import shutil

    run = tmp_path / "epochs_run"
    shutil.copytree(straight_run[0] / "checkpoints" / f"step_{STEPS}", run / "checkpoints" / f"step_{STEPS}")
    state_file = run / "checkpoints" / f"step_{STEPS}" / "trainer_state.json"
    state = json.loads(state_file.read_text())  # as a 2-epoch run would have written it (not covered by the hashes)
    state["args"].update(train_steps=None, epochs=2)
    state_file.write_text(json.dumps(state))
    cfg = run_config(corpus_shards, run, resume="auto", train_steps=None, epochs=2)
    checked_inputs(cfg)  # same flags, same world size: accepted
    with pytest.raises(SmallBertError, match="world size 1 -> 2; pass --resume_force"):
        checked_inputs(cfg, world_size=2)
    inputs = checked_inputs(dataclasses.replace(cfg, resume_force=True), world_size=1)
    per_epoch = [inputs.train.batches_per_epoch(8, n) for n in (1, 2)]
    assert per_epoch[0] >= 2 * per_epoch[1] > 0
    with caplog.at_level(logging.WARNING, logger="smallbert"):
        checked_inputs(dataclasses.replace(cfg, resume_force=True), world_size=2)
    assert "changed settings: world size 1 -> 2" in caplog.text
    assert f"end 0 at update {2 * per_epoch[0]} -> peak 0.002, warmup 3, end 0 at update {2 * per_epoch[1]})" \
        in caplog.text


@pytest.mark.parametrize("queue", [False, True], ids=["cpu", "accelerator"])
def test_a_run_that_only_overflows_stops(corpus_shards, tmp_path, monkeypatch, queue):
    """Skipped steps are not updates, so a diverged run (every gradient inf/nan) would read data forever.

    Also how the loop meets the device: on an accelerator it launches the steps up to the next log point
    (log_steps=5) without waiting, then reads them, and a window that ends short on skipped steps is launched
    again; on CPU it reads each step as it launches it."""
    calls = []

    class Overflowed:
        read_ = False

        def read(self):
            if not self.read_:
                calls.append("read")
                self.read_ = True
            return StepOutput(loss=float("nan"), aux=(float("nan"), float("nan")), overflow=True, loss_scale=1.0)

    def overflow(self, *batch):
        calls.append("launch")
        return Overflowed()

    monkeypatch.setattr(TrainStep, "launch", overflow)
    monkeypatch.setattr(device, "queues_steps", lambda target: queue)
    with pytest.raises(SmallBertError, match="training diverged: the last 100 steps after update 0 all had inf/nan"):
        pretrain(run_config(corpus_shards, tmp_path / "diverged", eval_data_dir=None))
    assert calls == ((["launch"] * 5 + ["read"] * 5) * 20 if queue else ["launch", "read"] * 100)


@pytest.mark.parametrize("queue", [False, True], ids=["cpu", "accelerator"])
def test_run_steps_reads_each_step_on_cpu_and_all_at_the_end_on_accelerators(queue):
    calls = []

    class Step:
        def launch(self, *batch):
            calls.append(("launch", batch[0]))
            out = StepOutput(loss=float(batch[0]), aux=(), overflow=False, loss_scale=1.0)
            return type("Pending", (), {"read": lambda self: calls.append(("read", batch[0])) or out})()

    outs = run_steps(Step(), [(i,) for i in range(3)], queue)
    assert [o.loss for o in outs] == [0.0, 1.0, 2.0]
    launches = [("launch", i) for i in range(3)]
    reads = [("read", i) for i in range(3)]
    # on CPU each step is read again at the end; PendingStep.read returns its first result then
    expected = launches + reads if queue else [c for pair in zip(launches, reads) for c in pair] + reads
    assert calls == expected


def test_next_event_is_the_nearest_log_eval_or_save_point():
    assert next_event(0, 30, 5, 15, 15) == 5
    assert next_event(5, 30, 5, 15, 15) == 10
    assert next_event(13, 30, 100, 0, 15) == 15
    assert next_event(15, 30, 100, 0, 0) == 30  # 0: never
    assert next_event(28, 30, 5, 0, 1000) == 30  # never past the end


def test_mlm_only_trains_without_the_nsp_head(corpus_shards, mlm_only_shards, tmp_path):
    metadata = json.loads((mlm_only_shards / "metadata.json").read_text())
    assert metadata["mlm_only"] is True and metadata["statistics"]["random_next"] == 0
    assert metadata["statistics"]["tokens"] / metadata["statistics"]["instances"] > 30  # packed to 32
    output_dir = tmp_path / "mlm_only"
    results = pretrain(run_config(corpus_shards, output_dir, data_dir=str(mlm_only_shards),
                                  eval_data_dir=str(mlm_only_shards), mlm_only=True))
    rows = read_rows(output_dir / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert "nsp_loss" not in train[0] and train[-1]["loss"] == train[-1]["mlm_loss"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.5, [r["loss"] for r in train]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, SAVE_AT, STEPS] and "eval_nsp_accuracy" not in evals[0]
    assert results["eval_perplexity"] < results["initial_eval_perplexity"]
    # The pooler and NSP head are not trained (nor decayed); everything the MLM loss reaches is.
    middle, final = load(output_dir / f"checkpoints/step_{SAVE_AT}/model.ckpt"), load(output_dir / "final/model.ckpt")
    for name in final:
        unchanged = np.array_equal(middle[name], final[name])
        assert unchanged == name.startswith(("bert.pooler.", "cls.seq_relationship.")), name


def cli_error(capsys, argv) -> str:
    assert run_pretrain.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_input_is_one_line_before_compiling(corpus_shards, mlm_only_shards, tmp_path, capsys, monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("a graph was built before the input was checked")

    monkeypatch.setattr(TrainStep, "__init__", no_compile)
    base = ["--data_dir", str(corpus_shards / "shards"), "--config", str(corpus_shards / "bert_config.json"),
            "--output_dir", str(tmp_path / "run"), "--train_steps", "2"]
    small_vocab = tmp_path / "small.json"
    small_vocab.write_text(json.dumps({**json.loads((corpus_shards / "bert_config.json").read_text()),
                                       "vocab_size": 20}))
    assert "vocab_size is 20" in cli_error(capsys, base[:2] + ["--config", str(small_vocab)] + base[4:])
    short = tmp_path / "short.json"
    short.write_text(json.dumps({**json.loads((corpus_shards / "bert_config.json").read_text()),
                                 "max_position_embeddings": 16}))
    assert "max_position_embeddings 16" in cli_error(capsys, base[:2] + ["--config", str(short)] + base[4:])
    (tmp_path / "empty").mkdir()
    assert "--data_dir: " in cli_error(capsys, ["--data_dir", str(tmp_path / "empty")] + base[2:])
    assert "--resume: " in cli_error(capsys, base + ["--resume", str(tmp_path / "nowhere")])
    assert "nowhere" in cli_error(capsys, base + ["--init_checkpoint", str(tmp_path / "nowhere")])
    assert "--do_load_ckpt" in cli_error(capsys, base + ["--do_load_ckpt", "True"])
    assert "bfloat16" in cli_error(capsys, base + ["--amp", "O2", "--amp_dtype", "bfloat16"])
    assert "--adam_epsilon: must be > 0" in cli_error(capsys, base + ["--adam_epsilon", "0"])
    assert "--accumulation_steps" in cli_error(capsys, base + ["--train_batch_size", "6",
                                                               "--accumulation_steps", "4"])
    assert "--mlm_only: --data_dir" in cli_error(capsys, base + ["--mlm_only"])
    assert "pass --mlm_only" in cli_error(capsys, ["--data_dir", str(mlm_only_shards)] + base[2:])
    assert "--eval_data_dir" in cli_error(capsys, ["--data_dir", str(mlm_only_shards)] + base[2:] + [
        "--mlm_only", "--eval_data_dir", str(corpus_shards / "shards")])
    checkpointed = tmp_path / "checkpointed" / "checkpoints" / "step_1"
    checkpointed.mkdir(parents=True)
    assert "--resume auto" in cli_error(capsys, base[:4] + ["--output_dir", str(tmp_path / "checkpointed"),
                                                           "--train_steps", "2"])


def test_seed_flag_names_map(tmp_path):
    args = run_pretrain.build_parser().parse_args(
        ["--data_dir", "d", "--config", "c.json", "--save_ckpt_path", "out", "--epochs", "1", "--jit", "False"])
    assert args.output_dir == os.path.abspath("out") and args.jit is False and args.epochs == 1
    assert run_pretrain.build_parser().parse_args(["--data_dir", "d", "--config", "c", "--output_dir", "o",
                                                   "--train_steps", "1", "--no-jit"]).jit is False
    assert dataclasses.fields(PretrainConfig)  # every parsed flag is a PretrainConfig field
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    assert set(vars(args)) - {"do_load_ckpt", "model_path"} <= names
