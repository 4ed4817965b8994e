"""TinyBERT-style layer distillation (Jiao et al. 2020): the student's hidden states and attention scores learn the
teacher's, layer by layer, before the logit stage of `distill.py`.

Student layer i (0 = the embeddings, 1..Ls the Transformer layers) learns teacher layer `layer_map(Ls, Lt)[i]` =
i·Lt // Ls. The loss, summed over those pairs, is
  - hidden: MSE between the student's hidden states times a learned W [Hs, Ht] (no map when Hs == Ht) and the
    teacher's, over the real (non-pad) tokens;
  - attention (layers 1..Ls, only when both have the same number of heads): MSE between the attention scores
    QKᵀ/√D before the mask and softmax, over pairs of real tokens. Scores rather than probabilities, as TinyBERT:
    the softmax flattens what tells heads apart (a key scored far below the others and one just below both get a
    probability near 0, and the MSE of near-0 probabilities gives a near-0 gradient), while the scores keep it.
The teacher runs live, in eval mode and without gradients, on the student's own batches: it needs the same token
ids, so both must tokenize identically (`check_same_tokenizer`). W is trained with the student and discarded after.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from tqdm import tqdm

from .. import device
from ..errors import SmallBertError
from ..model import BertForSequenceClassification, truncated_normal
from ..optim import WarmupPolynomialDecay, build_optimizer
from ..tokenization import FullTokenizer
from ..train import DynamicLossScale, TrainStep, run_steps
from .config import DistillConfig
from .encode import Encoded, batch_rows, bucket_lengths, make_batch

logger = logging.getLogger("smallbert")

TEACHER_PREFIX = "teacher."  # the teacher's parameter names inside the stage's net, apart from the student's


def layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """The teacher layer each student layer learns: (0, Lt//Ls, 2·Lt//Ls, ..., Lt), Ls + 1 entries (0 = embeddings)."""
    return tuple(i * teacher_layers // student_layers for i in range(student_layers + 1))


def hidden_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the real tokens: student, teacher float32 [B,S,H]; mask float32 [B,S] (1 = real).

    sum(mask · (student - teacher)²) / (sum(mask) · H). Returns float32 []."""
    squared = ((student - teacher) ** 2).sum(axis=-1)
    return (squared * mask).sum() / (mask.sum() * student.shape[-1])


def attention_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the (query, key) pairs of real tokens: student, teacher float32 [B,A,S,S]; mask
    float32 [B,S]. sum(m_q · m_k · (student - teacher)²) / (A · Σ_b (Σ_s m)²). Returns float32 []."""
    pairs = (mask[:, :, None] * mask[:, None, :])[:, None]  # [B,1,S,S]
    return (((student - teacher) ** 2) * pairs).sum() / (pairs.sum() * student.shape[1])


def check_same_tokenizer(teacher_tokenizer: FullTokenizer, tokenizer: FullTokenizer, teacher_path: str,
                         vocab_file: str) -> None:
    """The live teacher reads the student's token ids: refuses, naming --intermediate_loss, another vocab or
    casing."""
    if teacher_tokenizer.vocab != tokenizer.vocab:
        raise SmallBertError(f"--intermediate_loss: the teacher {teacher_path} and the student ({vocab_file}) have "
                             f"different vocabularies; layer distillation needs identical tokenization")
    if teacher_tokenizer.do_lower_case != tokenizer.do_lower_case:
        raise SmallBertError(f"--intermediate_loss: the teacher {teacher_path} has do_lower_case "
                             f"{teacher_tokenizer.do_lower_case}, the student {tokenizer.do_lower_case}; layer "
                             f"distillation needs identical tokenization")


class LayerDistillationLoss(nn.Cell):
    """The student's layers against the live teacher's, as `TrainStep` wants it.

    (input_ids, token_type_ids, attention_mask int32 [B,S]) → the hidden and attention losses summed over the
    mapped layers, float32 []. `teacher`'s parameters are renamed under TEACHER_PREFIX (they would clash with the
    student's) and get no gradient; keep it in eval mode. `hidden_map` [Hs, Ht] exists only when widths differ.
    """

    def __init__(self, student: BertForSequenceClassification, teacher: BertForSequenceClassification):
        super().__init__(auto_prefix=False)  # keep the student's Hugging Face parameter names
        if not teacher.bert.embeddings.word_embeddings.weight.name.startswith(TEACHER_PREFIX):
            teacher.update_parameters_name(TEACHER_PREFIX)
        self.student = student.bert
        self.teacher = teacher.bert
        s, t = student.config, teacher.config
        self.layers = layer_map(s.num_hidden_layers, t.num_hidden_layers)
        self.hidden_map = None
        if s.hidden_size != t.hidden_size:
            self.hidden_map = Parameter(truncated_normal((s.hidden_size, t.hidden_size), s.initializer_range),
                                        name="layer_distillation.hidden_map")
        self.match_attention = s.num_attention_heads == t.num_attention_heads
        if not self.match_attention:
            logger.info("--intermediate_loss: the student has %d attention heads, the teacher %d: hidden states "
                        "only, no attention loss", s.num_attention_heads, t.num_attention_heads)

    def stage_parameters(self) -> list[Parameter]:
        """What the stage updates: the student's embeddings and encoder and the map. The pooler and classifier get
        no gradient here; left out, weight decay does not shrink them either."""
        own = [self.hidden_map] if self.hidden_map is not None else []
        return [p for p in self.student.trainable_params() if not p.name.startswith("bert.pooler.")] + own

    def construct(self, input_ids, token_type_ids, attention_mask):
        # By index, not unpacked: unpacked scores left unused (head counts differ) make the graph compiler warn
        # "Some side effect nodes were eliminated by mistake".
        student = self.student.all_layers(input_ids, token_type_ids, attention_mask)
        teacher = self.teacher.all_layers(input_ids, token_type_ids, attention_mask)
        mask = attention_mask.astype(mstype.float32)
        loss = ops.zeros((), mstype.float32)
        for i, j in enumerate(self.layers):
            student_state = student[0][i].astype(mstype.float32)
            if self.hidden_map is not None:
                student_state = ops.matmul(student_state, self.hidden_map)
            loss = loss + hidden_mse(student_state, ops.stop_gradient(teacher[0][j].astype(mstype.float32)), mask)
            if self.match_attention and i > 0:
                loss = loss + attention_mse(student[1][i - 1], ops.stop_gradient(teacher[1][j - 1]), mask)
        return loss


def train_layers(student: BertForSequenceClassification, teacher: BertForSequenceClassification,
                 cfg: DistillConfig, train_ids: Encoded, seed: int) -> dict:
    """`cfg.intermediate_epochs` epochs of layer distillation of `student` on the transfer set's ids.

    AdamWeightDecay with cfg.lr, warmup and linear decay over the stage, through the same TrainStep as the logit
    stage (jit, AMP with loss scaling, clipping). Returns {"epochs": [{epoch, train_loss, train_seconds}],
    "seconds_per_step"}: the step includes the live teacher's forward pass.
    """
    net = LayerDistillationLoss(student, teacher)
    buckets = bucket_lengths(cfg.max_length, cfg.pad_to_max_length)
    steps_per_epoch = len(train_ids.lengths) // cfg.train_batch_size
    total_steps = steps_per_epoch * cfg.intermediate_epochs
    schedule = WarmupPolynomialDecay(cfg.lr, int(total_steps * cfg.warmup_proportion), total_steps)
    optimizer = build_optimizer("adamw", net.stage_parameters(), schedule, weight_decay=cfg.weight_decay)
    step = TrainStep(net, optimizer, max_grad_norm=cfg.max_grad_norm,
                     loss_scale=DynamicLossScale() if cfg.amp == "O2" else None)
    rng = np.random.default_rng((seed, 1))  # its own batch order: the logit stage's stays as without this stage
    student.set_train(True)
    teacher.set_train(False)
    epochs = []
    for epoch in range(1, cfg.intermediate_epochs + 1):
        start = time.perf_counter()
        bar = tqdm(batch_rows(train_ids.lengths, cfg.train_batch_size, buckets, rng),
                   desc=f"seed {seed} layers {epoch}/{cfg.intermediate_epochs}", unit="batch")
        outs = run_steps(step, (make_batch(train_ids, rows, buckets, cfg.train_batch_size) for rows in bar),
                         device.queues_steps(cfg.device_target), bar)
        bar.close()
        losses = [out.loss for out in outs if not out.overflow]
        epochs.append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                       "train_seconds": round(time.perf_counter() - start, 2)})
        logger.info("seed %d layer distillation epoch %d/%d: loss %.4f (%.0f s)", seed, epoch,
                    cfg.intermediate_epochs, epochs[-1]["train_loss"], epochs[-1]["train_seconds"])
    seconds = sum(e["train_seconds"] for e in epochs)
    return {"epochs": epochs, "layer_map": list(net.layers), "attention_loss": net.match_attention,
            "seconds_per_step": round(seconds / max(total_steps, 1), 4)}
