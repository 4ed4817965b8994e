"""Training parity with transformers: our pretraining loop and a PyTorch reference, step by step.

Both start from the same initial weights (ours, exported with `smallbert.convert` and loaded by transformers'
BertForPreTraining), read the same pretraining batches in the same order (real masked positions and weights,
padded prediction slots with weight 0), run with dropout off and apply the same update. The reference side is
written here from the papers and Google's `optimization.py`, not from our code:

- `AdamWeightDecay`: Google BERT's Adam. Unlike `torch.optim.AdamW` it does not bias-correct the moments.
- `Lamb`: You et al. 2019, Algorithm 2 (bias-corrected Adam direction, layer-wise trust ratio ||w|| / ||u||), with
  no weight decay and no trust ratio for LayerNorm and bias parameters (TF-Addons' default exclusions).
- `google_learning_rate`: linear warmup from 0, then polynomial decay counted from step 0.
- gradients clipped to global norm 1.0 as `tf.clip_by_global_norm` does: g · c / max(‖g‖, c).

Ours runs through `smallbert.pretrain.pretrain` itself (the loop behind run_pretrain.py, log_steps 1), so every
flag-to-graph wiring is inside the comparison. Run from a checkout:

    python bench/train_parity.py                  # 200 steps of L2-H128 on the bundled sample, both optimizers

It prints, per optimizer, the largest relative MLM and NSP loss difference over the steps and the largest final
weight difference. tests/test_train_parity.py runs the same for 20 steps of L2-H32.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import transformers

import mindspore as ms

from smallbert import BertConfig, BertForPreTraining
from smallbert.config import PretrainConfig
from smallbert.convert import convert
from smallbert.data.instances import InstanceConfig
from smallbert.data.pipeline import PipelineConfig, create_pretraining_data
from smallbert.data.records import checked_batches, list_shards, read_metadata
from smallbert.pretrain import PRETRAINING_COLUMNS, pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "sample")


@dataclasses.dataclass(frozen=True)
class Run:
    """The hyper-parameters both sides train with (Google's defaults where not given)."""

    optimizer: str
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    end_lr: float = 0.0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eps: float = 1e-6  # both optimizers' (Google's AdamWeightDecay: 1e-6)
    seed: int = 12345


# --- the PyTorch reference -------------------------------------------------------------------------------------

def google_excluded(name: str) -> bool:
    """Google's `_do_use_weight_decay` exclusions: names matching LayerNorm, layer_norm or bias."""
    return any(re.search(pattern, name) for pattern in ("LayerNorm", "layer_norm", "bias"))


def google_learning_rate(step: int, run: Run) -> float:
    """The learning rate of the `step`-th update (0-based), as Google's `create_optimizer` computes it."""
    progress = min(step, run.steps) / run.steps
    decayed = (run.lr - run.end_lr) * (1.0 - progress) + run.end_lr
    if step < run.warmup_steps:
        return run.lr * step / run.warmup_steps
    return decayed


class AdamWeightDecay(torch.optim.Optimizer):
    """Google BERT's AdamWeightDecay: m, v without bias correction, update m / (sqrt(v) + eps) + λ·w.

    Takes (name, parameter) pairs; λ = 0 for `google_excluded` names. `step(lr)` applies one update.
    """

    def __init__(self, named_params, weight_decay: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-6):
        groups = [{"params": [p], "name": n, "weight_decay": 0.0 if google_excluded(n) else weight_decay}
                  for n, p in named_params]
        super().__init__(groups, {"beta1": beta1, "beta2": beta2, "eps": eps})

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for group in self.param_groups:
            w = group["params"][0]
            m, v = self._moments(w)
            m.mul_(group["beta1"]).add_(w.grad, alpha=1.0 - group["beta1"])
            v.mul_(group["beta2"]).addcmul_(w.grad, w.grad, value=1.0 - group["beta2"])
            update = m / (v.sqrt() + group["eps"]) + group["weight_decay"] * w
            w.sub_(lr * update)

    def _moments(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state[w]
        if not state:
            state["m"], state["v"], state["t"] = torch.zeros_like(w), torch.zeros_like(w), 0
        state["t"] += 1
        return state["m"], state["v"]


class Lamb(AdamWeightDecay):
    """LAMB, You et al. 2019 Algorithm 2 with φ = identity, at update t = 1, 2, ...:

        m̂ = m / (1 - β1^t),  v̂ = v / (1 - β2^t),  u = m̂ / (sqrt(v̂) + eps) + λ·w,  w ← w - lr · ‖w‖/‖u‖ · u

    LayerNorm and bias parameters (`google_excluded`) get λ = 0 and ratio 1; the ratio is also 1 when a norm is 0.
    """

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for group in self.param_groups:
            w = group["params"][0]
            m, v = self._moments(w)
            t = self.state[w]["t"]
            m.mul_(group["beta1"]).add_(w.grad, alpha=1.0 - group["beta1"])
            v.mul_(group["beta2"]).addcmul_(w.grad, w.grad, value=1.0 - group["beta2"])
            m_hat, v_hat = m / (1.0 - group["beta1"] ** t), v / (1.0 - group["beta2"] ** t)
            update = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * w
            ratio = 1.0
            if self.adapts(group["name"]):
                w_norm, u_norm = float(w.norm()), float(update.norm())
                ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            w.sub_(lr * ratio * update)

    @staticmethod
    def adapts(name: str) -> bool:
        """Whether the parameter `name` gets the trust ratio."""
        return not google_excluded(name)


REFERENCE_OPTIMIZERS = {"adamw": AdamWeightDecay, "lamb": Lamb}


def reference_losses(model: transformers.BertForPreTraining, batch: dict[str, torch.Tensor]):
    """Google's pretraining losses for one batch: (mlm_loss, nsp_loss) as torch scalars.

    mlm_loss = sum(w · nll) / (sum(w) + 1e-5) over the prediction slots, the MLM head applied at the gathered
    masked positions (equal to transformers' `prediction_logits` there); nsp_loss = mean cross-entropy.
    """
    out = model.bert(input_ids=batch["input_ids"], attention_mask=batch["input_mask"],
                     token_type_ids=batch["segment_ids"])
    sequence, pooled = out.last_hidden_state, out.pooler_output
    index = batch["masked_lm_positions"].unsqueeze(-1).expand(-1, -1, sequence.shape[-1])
    logits = model.cls.predictions(torch.gather(sequence, 1, index))
    nll = F.cross_entropy(logits.flatten(0, 1), batch["masked_lm_ids"].flatten(), reduction="none")
    weights = batch["masked_lm_weights"].flatten()
    mlm_loss = (weights * nll).sum() / (weights.sum() + 1e-5)
    nsp_loss = F.cross_entropy(model.cls.seq_relationship(pooled), batch["next_sentence_labels"].flatten())
    return mlm_loss, nsp_loss


def clip_by_global_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """Scales every gradient by max_norm / max(global norm, max_norm), in place (tf.clip_by_global_norm);
    returns the global norm before clipping."""
    norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))
    for p in params:
        p.grad.mul_(max_norm / max(norm, max_norm))
    return norm


def load_reference(hf_dir: str) -> transformers.BertForPreTraining:
    """transformers' BertForPreTraining from `hf_dir`, eager attention, train mode (the config has dropout 0),
    with Google's embedding gradient."""
    model = transformers.BertForPreTraining.from_pretrained(hf_dir, attn_implementation="eager")
    # transformers' word embeddings drop the input-lookup gradient of [PAD] (padding_idx); Google's BERT and ours
    # do not, and [PAD] does occur in real positions: masking's random replacement draws it from the vocabulary.
    model.bert.embeddings.word_embeddings.padding_idx = None
    # The MLM decoder must be the word embeddings and cls.predictions.bias, as in ours, or the runs part at step 1.
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    return model.train()


class Trained(NamedTuple):
    """A finished run: losses [steps, 2] = (mlm, nsp) before each update, {name: final weight}, and (reference
    only) the global gradient norm of each step before clipping."""

    losses: np.ndarray
    weights: dict[str, np.ndarray]
    grad_norms: np.ndarray | None = None


def train_reference(hf_dir: str, batches: list[dict[str, np.ndarray]], run: Run,
                    optimizer_class: type | None = None) -> Trained:
    """Trains transformers' model on `batches` in order. `optimizer_class(named_parameters, weight_decay)`, an
    optimizer whose `step(lr)` applies one update, replaces the run's reference optimizer."""
    torch.manual_seed(run.seed)
    model = load_reference(hf_dir)
    named = list(model.named_parameters())
    params = [p for _, p in named]
    optimizer = (optimizer_class(named, run.weight_decay) if optimizer_class
                 else REFERENCE_OPTIMIZERS[run.optimizer](named, run.weight_decay, eps=run.eps))
    losses, norms = [], []
    for step, batch in enumerate(batches):
        tensors = {k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind == "i" else v) for k, v in batch.items()}
        mlm_loss, nsp_loss = reference_losses(model, tensors)
        optimizer.zero_grad(set_to_none=False)
        (mlm_loss + nsp_loss).backward()
        norms.append(clip_by_global_norm(params, run.max_grad_norm))
        optimizer.step(google_learning_rate(step, run))
        losses.append((mlm_loss.item(), nsp_loss.item()))
    return Trained(np.array(losses), {n: p.detach().numpy().copy() for n, p in named}, np.array(norms))


# --- ours, and the shared inputs -------------------------------------------------------------------------------

def sample_shards(output_dir: str, max_seq_length: int = 64, max_predictions_per_seq: int = 10) -> str:
    """Pretraining shards from the bundled sample dump (as tools/quickstart.py makes them); returns the dir."""
    create_pretraining_data(PipelineConfig(
        input_files=(os.path.join(SAMPLE, "wiki", "sample-pages-articles.xml.bz2"),), output_dir=output_dir,
        vocab_file=os.path.join(SAMPLE, "vocab.txt"),
        instances=InstanceConfig(max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq,
                                 dupe_factor=5)))
    return output_dir


def initial_weights(config: BertConfig, directory: str, seed: int) -> tuple[str, str]:
    """Our freshly initialised BertForPreTraining (dropout off) saved as ours and, via smallbert.convert, as a
    Hugging Face directory; returns (ours_dir, hf_dir)."""
    config = dataclasses.replace(config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ms.set_seed(seed)
    ours_dir, hf_dir = os.path.join(directory, "init"), os.path.join(directory, "init_hf")
    BertForPreTraining(config).save_pretrained(ours_dir)
    convert("smallbert", "hf", ours_dir, hf_dir)
    return ours_dir, hf_dir


def loop_batches(data_dir: str, run: Run, vocab_size: int) -> list[dict[str, np.ndarray]]:
    """The first `run.steps` batches `pretrain` reads (one process): each epoch's shuffled order, epoch after
    epoch, as PRETRAINING_COLUMNS dicts."""
    files, metadata = list_shards(data_dir), read_metadata(data_dir)
    batches, epoch = [], 0
    while len(batches) < run.steps:
        for row in checked_batches(files, run.batch_size, vocab_size=vocab_size, epoch=epoch, seed=run.seed,
                                   shuffle=True, metadata=metadata):
            batches.append({c: row[c] for c in PRETRAINING_COLUMNS})
            if len(batches) == run.steps:
                break
        epoch += 1
    return batches


def train_ours(data_dir: str, ours_dir: str, output_dir: str, run: Run) -> Trained:
    """`smallbert.pretrain.pretrain` from `ours_dir` for run.steps steps, logging every step."""
    cfg = PretrainConfig(data_dir=data_dir, bert_config_file=os.path.join(ours_dir, "config.json"),
                         output_dir=output_dir, optimizer=run.optimizer, lr=run.lr, end_lr=run.end_lr,
                         warmup_steps=run.warmup_steps, train_steps=run.steps, train_batch_size=run.batch_size,
                         weight_decay=run.weight_decay, adam_epsilon=run.eps, max_grad_norm=run.max_grad_norm,
                         save_steps=0,
                         log_steps=1, init_checkpoint=ours_dir, seed=run.seed)
    pretrain(cfg)
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    losses = np.array([(r["mlm_loss"], r["nsp_loss"]) for r in rows if "mlm_loss" in r])
    final = ms.load_checkpoint(os.path.join(output_dir, "final", "model.ckpt"))
    return Trained(losses, {name: p.asnumpy() for name, p in final.items()})


def compare(ours: Trained, reference: Trained) -> dict[str, float]:
    """Largest relative MLM and NSP loss differences over the steps, and largest absolute final weight
    difference over every one of our weights (all must exist in the reference)."""
    relative = np.abs(ours.losses - reference.losses) / np.abs(reference.losses)
    our_weights, ref_weights = ours.weights, reference.weights
    missing = sorted(set(our_weights) - set(ref_weights))
    if missing:
        raise KeyError(f"reference has no {missing[0]} ({len(missing)} missing)")
    weight = max(float(np.abs(our_weights[n] - ref_weights[n]).max()) for n in our_weights)
    return {"mlm_rel": float(relative[:, 0].max()), "nsp_rel": float(relative[:, 1].max()), "weight": weight}


def weight_change(initial_dir: str, final: dict[str, np.ndarray]) -> float:
    """Largest absolute change of any weight from `initial_dir`'s checkpoint: how far the run moved."""
    initial = ms.load_checkpoint(os.path.join(initial_dir, "model.ckpt"))
    return max(float(np.abs(final[n] - p.asnumpy()).max()) for n, p in initial.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(SAMPLE, "bert_config.json"),
                        help="BERT config (default: the sample's L2-H128)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, nargs=2, default=(1e-3, 1e-2), metavar=("ADAMW", "LAMB"))
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--eps", type=float, default=1e-6, help="both sides' optimizer eps (Google's: 1e-6)")
    parser.add_argument("--optimizers", default="adamw,lamb", help="which to run, of adamw,lamb")
    args = parser.parse_args(argv)
    ms.set_device("CPU")
    config = BertConfig.from_json_file(args.config)
    print(f"config {args.config}: L{config.num_hidden_layers}-H{config.hidden_size}, {args.steps} steps of "
          f"{args.batch_size} sequences (sample shards, seq 64, 10 predictions), warmup {args.warmup_steps}, "
          f"linear decay to 0, clip 1.0, weight decay 0.01, eps {args.eps:g}, dropout off, float32; "
          f"torch {torch.__version__}, "
          f"transformers {transformers.__version__}, MindSpore {ms.__version__}", flush=True)
    print("| optimizer | lr | max rel. MLM loss diff | max rel. NSP loss diff | max final weight diff "
          "| max weight change | steps clipped | s (ours / reference) |")
    print("|---|---|---|---|---|---|---|---|", flush=True)  # before the data pipeline forks
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = sample_shards(os.path.join(tmp, "data"))
        ours_dir, hf_dir = initial_weights(config, tmp, args.seed)
        for name, lr in zip(("adamw", "lamb"), args.lr):
            if name not in args.optimizers.split(","):
                continue
            run = Run(name, args.steps, args.batch_size, lr, args.warmup_steps, eps=args.eps, seed=args.seed)
            started = time.perf_counter()
            ours = train_ours(data_dir, ours_dir, os.path.join(tmp, f"run_{name}"), run)
            middle = time.perf_counter()
            reference = train_reference(hf_dir, loop_batches(data_dir, run, config.vocab_size), run)
            done = time.perf_counter()
            diff = compare(ours, reference)
            print(f"| {name} | {lr:g} | {diff['mlm_rel']:.2e} | {diff['nsp_rel']:.2e} | {diff['weight']:.2e} "
                  f"| {weight_change(ours_dir, ours.weights):.3f} | {int((reference.grad_norms > 1.0).sum())} "
                  f"| {middle - started:.0f} / {done - middle:.0f} |",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
