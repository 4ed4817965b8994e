"""Optimizers and learning-rate schedule for BERT, as Google's `optimization.py` defines them.

- `WarmupPolynomialDecay`: linear warmup from 0, then polynomial decay to `end_learning_rate`.
- `AdamWeightDecay`: Google's update (no bias correction, eps 1e-6, decoupled weight decay), with decay only on
  parameters that are not LayerNorm weights or biases: our fused CPU kernel, MindSpore's `nn.AdamWeightDecay`
  elsewhere (see the class for the difference).
- `Lamb`: LAMB (You et al. 2019) written from composite ops. MindSpore's `nn.Lamb` calls a fused Ascend kernel that
  does not exist on CPU (and is deprecated after 2.9); ours runs on every device, the same code everywhere.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from . import cpu_kernels
from .config import OPTIMIZERS
from .errors import SmallBertError


def excluded_from_weight_decay(name: str) -> bool:
    """True for LayerNorm weights and all biases, which Google's BERT does not decay."""
    return "LayerNorm" in name or name.endswith("bias")


class WarmupPolynomialDecay(LearningRateSchedule):
    """Google BERT's learning rate as a function of the number of updates already applied, `global_step`.

        lr(t) = learning_rate * t / warmup_steps                                      if t < warmup_steps
        lr(t) = (learning_rate - end) * (1 - min(t, decay_steps) / decay_steps)^power + end   otherwise

    As in Google's code the decay counts from step 0, not from the end of warmup, so `decay_steps` is the total
    number of training steps. Called with an int32 Tensor `global_step` ([] or [1]); returns a float32 scalar.
    """

    def __init__(self, learning_rate: float, warmup_steps: int, decay_steps: int, end_learning_rate: float = 0.0,
                 power: float = 1.0):
        super().__init__()
        if learning_rate <= 0 or end_learning_rate < 0 or warmup_steps < 0 or decay_steps <= 0 or power <= 0:
            raise SmallBertError(
                f"learning-rate schedule: need learning_rate > 0, end_learning_rate >= 0, warmup_steps >= 0, "
                f"decay_steps > 0, power > 0; got {learning_rate}, {end_learning_rate}, {warmup_steps}, "
                f"{decay_steps}, {power}")
        self.learning_rate = float(learning_rate)
        self.end_learning_rate = float(end_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.power = float(power)

    def construct(self, global_step: Tensor) -> Tensor:
        step = global_step.astype(mstype.float32).reshape(())
        progress = ops.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        decayed = (self.learning_rate - self.end_learning_rate) * ops.pow(1.0 - progress, self.power) \
            + self.end_learning_rate
        if self.warmup_steps == 0:
            return decayed
        warmup = self.learning_rate * step / float(self.warmup_steps)
        return ops.select(step < float(self.warmup_steps), warmup, decayed)

    def value(self, step: int) -> float:
        """The learning rate the `step`-th update (0-based) uses, evaluated eagerly for logging."""
        return float(self(Tensor(step, mstype.int32)).asnumpy())


def grouped_parameters(params: Sequence[Parameter], weight_decay: float) -> list[dict]:
    """Splits `params` into a decayed group and a LayerNorm/bias group without decay, keeping their order."""
    decay = [p for p in params if not excluded_from_weight_decay(p.name)]
    no_decay = [p for p in params if excluded_from_weight_decay(p.name)]
    groups = [{"params": group, "weight_decay": wd} for group, wd in ((decay, weight_decay), (no_decay, 0.0))
              if group]
    return groups + [{"order_params": list(params)}]


def _lamb_update(betas: tuple[Tensor, Tensor, Tensor, Tensor], eps: Tensor, lr: Tensor, bias_correction1: Tensor,
                 bias_correction2: Tensor, weight_decay: Tensor, param: Parameter, m: Parameter, v: Parameter,
                 gradient: Tensor, decay: bool, adapt: bool) -> Tensor:
    """One LAMB update of one parameter tensor, in float32; returns the new parameter value.

    betas: (β1, 1-β1, β2, 1-β2) as float32 scalars. adapt False: trust ratio 1 (a plain Adam step with bias
    correction), for LayerNorm weights and biases."""
    beta1, one_minus_beta1, beta2, one_minus_beta2 = betas
    gradient = gradient.astype(mstype.float32)
    next_m = beta1 * m + one_minus_beta1 * gradient
    next_v = beta2 * v + one_minus_beta2 * ops.square(gradient)
    update = (next_m / bias_correction1) / (ops.sqrt(next_v / bias_correction2) + eps)
    if decay:
        update = update + weight_decay * param
    if adapt:
        # Layer-wise trust ratio ||w|| / ||update||, 1 when either norm is zero (zero gradients).
        weight_norm = ops.norm(param)
        update_norm = ops.norm(update)
        trust_ratio = ops.select(ops.logical_and(weight_norm > 0.0, update_norm > 0.0),
                                 weight_norm / update_norm, ops.ones_like(weight_norm))
        update = trust_ratio * update
    next_param = param - lr * update
    ops.assign(m, next_m)
    ops.assign(v, next_v)
    ops.assign(param, next_param)
    return next_param


class _PerTensorOptimizer(nn.Optimizer):
    """An optimizer that updates its parameters one tensor at a time in `construct`."""

    def begin_update(self) -> tuple[Tensor, tuple]:
        """Counts this update and returns (the learning rate, each parameter's weight decay), evaluated at the
        number of updates applied before it."""
        lr = self.get_lr()
        weight_decay = self.get_weight_decay()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        if not self.is_group:
            weight_decay = (weight_decay,) * len(self._parameters)
        return lr, weight_decay


class AdamWeightDecay(_PerTensorOptimizer):
    """Google BERT's AdamWeightDecay (`optimization.py`) through `cpu_kernels.AdamWeightDecayInPlace`, for CPU.
    Per tensor w with gradient g, no bias correction, λ = 0 for LayerNorm weights and biases:

        m = β1·m + (1-β1)·g,   v = β2·v + (1-β2)·g²,   w = w - lr · (m / (sqrt(v) + eps) + λ·w)

    1-β1 and 1-β2 are formed in double precision and then rounded to float32, as Google's TF code (`1.0 -
    self.beta_2` of Python floats) and torch do. MindSpore's `nn.AdamWeightDecay` kernel forms them in float32
    from the rounded betas: 1 - float32(0.999) is 1.29e-5 below float32(0.001), so every v is 1.29e-5 too small,
    in the same direction at every step, and no float32 β2 avoids it. Moments are named `adam_m.<param>` /
    `adam_v.<param>` as `nn.AdamWeightDecay` names them, so checkpoints move between the two.
    """

    def __init__(self, params, learning_rate, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.hyper = Tensor([beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps], mstype.float32)
        self.no_decay = Tensor(0.0, mstype.float32)
        self.one = Tensor(1.0, mstype.float32)
        self.moments1 = self._parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="adam_v", init="zeros")
        self.update = cpu_kernels.AdamWeightDecayInPlace()

    def construct(self, gradients: tuple[Tensor, ...], scale: Tensor | None = None) -> tuple[Tensor, ...]:
        """Updates every parameter from `gradients` times `scale` (a float32 scalar; None: 1)."""
        lr, weight_decay = self.begin_update()
        scale = self.one if scale is None else scale
        updated = ()
        for param, m, v, gradient, wd, decay in zip(self._parameters, self.moments1, self.moments2, gradients,
                                                    weight_decay, self.decay_flags):
            updated += (self.update(param, m, v, gradient.astype(mstype.float32), lr, wd if decay else self.no_decay,
                                    self.hyper, scale),)
        return updated  # each tensor's done flag: the kernel writes w, m and v themselves


class Lamb(_PerTensorOptimizer):
    """LAMB from composite ops, so it runs on CPU, GPU and Ascend with the same numbers.

    Per parameter tensor w with gradient g at update t = 1, 2, ...:
        m = β1·m + (1-β1)·g,   v = β2·v + (1-β2)·g²
        u = (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps) + λ·w      (λ = 0 for LayerNorm and bias)
        w = w - lr · r · u,   r = ||w|| / ||u||  (1 when a norm is zero, or w is excluded from layer adaptation)
    which is You et al.'s Algorithm 2. As in TF-Addons (`exclude_from_layer_adaptation`, defaulting to the
    weight-decay exclusions) and NVIDIA's BERT LAMB, LayerNorm weights and biases get no trust ratio: with one, a
    zero-initialised bias would move in proportion to its own tiny norm and stay frozen for the whole run.
    Moments are named `lamb_m.<param>` / `lamb_v.<param>`.

    Args:
        params: a list of Parameters or of group dicts with "params" and "weight_decay" (see `grouped_parameters`).
        learning_rate: float or LearningRateSchedule (called with the number of updates already applied).
        exclude_from_layer_adaptation: parameter name → True for a trust ratio of 1; default
            `excluded_from_weight_decay` (LayerNorm and bias); `lambda name: False` adapts every tensor.
    """

    def __init__(self, params, learning_rate, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6,
                 weight_decay: float = 0.0, exclude_from_layer_adaptation: Callable[[str], bool] | None = None):
        super().__init__(learning_rate, params, weight_decay)
        excluded = exclude_from_layer_adaptation or excluded_from_weight_decay
        self.adapt_flags = tuple(not excluded(p.name) for p in self._parameters)
        # 1 - β formed in double, then rounded, as in AdamWeightDecay
        self.betas = tuple(Tensor(x, mstype.float32) for x in (beta1, 1.0 - beta1, beta2, 1.0 - beta2))
        self.log_beta1 = Tensor(math.log(beta1), mstype.float32)
        self.log_beta2 = Tensor(math.log(beta2), mstype.float32)
        self.eps = Tensor(eps, mstype.float32)
        self.moments1 = self._parameters.clone(prefix="lamb_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="lamb_v", init="zeros")

    def construct(self, gradients: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        lr, weight_decay = self.begin_update()
        step = self.global_step.astype(mstype.float32).reshape(())
        # 1 - β^t as -expm1(t·log β), log β from the double β: 1 - pow(float32 β, t) cancels to ~1e-5 relative error
        bias_correction1 = -ops.expm1(step * self.log_beta1)
        bias_correction2 = -ops.expm1(step * self.log_beta2)
        updated = ()
        for param, m, v, gradient, wd, decay, adapt in zip(self._parameters, self.moments1, self.moments2,
                                                           gradients, weight_decay, self.decay_flags,
                                                           self.adapt_flags):
            updated += (_lamb_update(self.betas, self.eps, lr, bias_correction1, bias_correction2, wd,
                                     param, m, v, gradient, decay, adapt),)
        return updated


def build_optimizer(name: str, params: Sequence[Parameter], learning_rate: float | LearningRateSchedule, *,
                    weight_decay: float = 0.01, beta1: float = 0.9, beta2: float = 0.999,
                    eps: float = 1e-6,
                    exclude_from_layer_adaptation: Callable[[str], bool] | None = None) -> nn.Optimizer:
    """Returns the optimizer `name` ("adamw" or "lamb") over `params`, Google's BERT settings by default.

    Weight decay applies to every parameter except LayerNorm weights and biases (`excluded_from_weight_decay`);
    so does Lamb's trust ratio unless `exclude_from_layer_adaptation` says otherwise (see `Lamb`). "adamw" is our
    `AdamWeightDecay` where the fused CPU kernels are on (`cpu_kernels.enabled()`), else `nn.AdamWeightDecay`.
    The optimizer's `global_step` Parameter counts applied updates and is what `learning_rate` is evaluated at.
    """
    if name not in OPTIMIZERS:
        raise SmallBertError(f"--optimizer: {name!r} is not one of {', '.join(OPTIMIZERS)}")
    if weight_decay < 0:
        raise SmallBertError(f"--weight_decay: must be >= 0, got {weight_decay}")
    groups = grouped_parameters(list(params), weight_decay)
    if name == "adamw":
        adamw = AdamWeightDecay if cpu_kernels.enabled() else nn.AdamWeightDecay
        return adamw(groups, learning_rate, beta1=beta1, beta2=beta2, eps=eps)
    return Lamb(groups, learning_rate, beta1=beta1, beta2=beta2, eps=eps,
                exclude_from_layer_adaptation=exclude_from_layer_adaptation)

