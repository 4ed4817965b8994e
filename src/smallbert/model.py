"""BERT in MindSpore: embeddings, post-LN Transformer encoder, pooler, pretraining and classification heads.

Parameter names are Hugging Face's (`bert.encoder.layer.0.attention.self.query.weight`, ...) and Dense weights are
`[out, in]`, so checkpoints move between the two by name. Every cell computes its matmuls in `compute_dtype`
(float32, or float16/bfloat16 for mixed precision) while parameters, LayerNorm, softmax and logits stay float32.

Shapes: B = batch, S = sequence length, H = hidden size, A = attention heads, D = H / A, P = masked positions,
V = vocabulary size.
"""
from __future__ import annotations

import math

from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import TruncatedNormal, initializer

from . import cpu_kernels
from .config import BertConfig


def truncated_normal(shape: tuple[int, ...], std: float) -> Parameter:
    """A float32 tensor drawn from N(0, std²) truncated at two standard deviations, as Google initialises."""
    return initializer(TruncatedNormal(sigma=std, a=-2 * std, b=2 * std), shape, mstype.float32)


class BiasAdd(nn.Cell):
    """x [N,C] + bias [C], with the bias gradient as a matmul of a ones vector by the incoming gradient.

    On CPU that gradient is ~20x faster than MindSpore's BiasAddGrad kernel, and unlike a broadcast `+` it keeps no
    output-sized buffers alive (both measured on a [4096, 1024] activation).
    """

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        return ops.bias_add(x, bias)

    def bprop(self, x: Tensor, bias: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor, Tensor]:
        ones = ops.ones((1, dout.shape[0]), dout.dtype)
        return dout, ops.matmul(ones, dout).reshape(bias.shape)


class Dense(nn.Cell):
    """y = x Wᵀ + b with W of shape [out, in] (PyTorch layout), computed in `compute_dtype`."""

    def __init__(self, in_features: int, out_features: int, init_std: float, compute_dtype=mstype.float32):
        super().__init__()
        self.weight = Parameter(truncated_normal((out_features, in_features), init_std), name="weight")
        self.bias = Parameter(initializer("zeros", (out_features,), mstype.float32), name="bias")
        self.compute_dtype = compute_dtype
        self.matmul = ops.MatMul(transpose_b=True)
        self.add_bias = BiasAdd()

    def project(self, x: Tensor) -> Tensor:
        """x [..., in] → x Wᵀ [N, out] before the bias, in compute_dtype; N = the product of x's leading dims."""
        return self.matmul(x.reshape(-1, x.shape[-1]).astype(self.compute_dtype),
                           self.weight.astype(self.compute_dtype))

    def construct(self, x: Tensor) -> Tensor:
        """x: [..., in] → [..., out] in compute_dtype."""
        out_shape = x.shape[:-1] + (self.weight.shape[0],)
        return self.add_bias(self.project(x), self.bias.astype(self.compute_dtype)).reshape(out_shape)


class LayerNorm(nn.Cell):
    """Layer normalisation over the last axis, always computed in float32; returns the input's dtype.

    Uses the fused CPU kernel when available (see `cpu_kernels`), MindSpore's LayerNorm otherwise.
    """

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = Parameter(initializer("ones", (hidden_size,), mstype.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (hidden_size,), mstype.float32), name="bias")
        self.layer_norm = (cpu_kernels.FusedLayerNorm(eps) if cpu_kernels.enabled() else
                           ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps))

    def construct(self, x: Tensor) -> Tensor:
        y, _, _ = self.layer_norm(x.astype(mstype.float32), self.weight, self.bias)
        return y.astype(x.dtype)


def dropout(p: float) -> nn.Cell:
    """A dropout layer: the resumable fused one on CPU when available, else MindSpore's seeded per rank (see
    `cpu_kernels.FusedDropout` and `cpu_kernels.SeededDropout`)."""
    return cpu_kernels.FusedDropout(p) if cpu_kernels.enabled() else cpu_kernels.SeededDropout(p)


class Embedding(nn.Cell):
    """A lookup table `weight` [num, dim]."""

    def __init__(self, num: int, dim: int, init_std: float):
        super().__init__()
        self.weight = Parameter(truncated_normal((num, dim), init_std), name="weight")

    def construct(self, ids: Tensor) -> Tensor:
        """ids: int [...] → float32 [..., dim]."""
        return ops.gather(self.weight, ids, 0)


class Activation(nn.Cell):
    """`hidden_act` as transformers applies it (gelu = exact erf form; gelu_new = tanh approximation)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fused_bias_gelu = cpu_kernels.FusedBiasGelu() if name == "gelu" and cpu_kernels.enabled() else None

    def construct(self, x: Tensor) -> Tensor:
        if self.name == "gelu":
            # The formula, not ops.gelu: on CPU ops.gelu's training graph holds ~4 input-sized buffers (measured).
            return (0.5 * x) * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))
        if self.name in ("gelu_new", "gelu_pytorch_tanh"):
            return ops.gelu(x, approximate="tanh")
        if self.name == "relu":
            return ops.relu(x)
        return ops.tanh(x)

    def of_dense(self, dense: Dense, x: Tensor) -> Tensor:
        """This activation of `dense(x)`, [..., in] → [..., out]; the bias goes into the fused GELU where it runs (a
        float32-only kernel: mixed precision takes the formula)."""
        if self.fused_bias_gelu is None or dense.compute_dtype != mstype.float32:
            return self.construct(dense(x))
        out_shape = x.shape[:-1] + (dense.weight.shape[0],)
        return self.fused_bias_gelu(dense.project(x), dense.bias).reshape(out_shape)


class BertEmbeddings(nn.Cell):
    """word + position + token-type embeddings → LayerNorm → dropout."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        std = config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, std)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size, std)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size, std)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = dropout(config.hidden_dropout_prob)
        self.compute_dtype = compute_dtype

    def construct(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        """input_ids, token_type_ids: int32 [B,S] → [B,S,H] in compute_dtype."""
        seq_length = input_ids.shape[1]
        positions = self.position_embeddings.weight[:seq_length]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + positions
        return self.dropout(self.LayerNorm(x)).astype(self.compute_dtype)


class BertSelfAttention(nn.Cell):
    """Multi-head scaled dot-product attention: softmax(QKᵀ/√D + mask) V."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        h, std = config.hidden_size, config.initializer_range
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = Dense(h, h, std, compute_dtype)
        self.key = Dense(h, h, std, compute_dtype)
        self.value = Dense(h, h, std, compute_dtype)
        self.dropout = dropout(config.attention_probs_dropout_prob)
        self.scale = 1.0 / math.sqrt(self.head_size)
        self.masked_softmax = cpu_kernels.FusedMaskedSoftmax() if cpu_kernels.enabled() else None
        # in training, the softmax and dropout as one kernel drawing the dropout layer's masks
        self.masked_softmax_dropout = (cpu_kernels.FusedMaskedSoftmaxDropout()
                                       if isinstance(self.dropout, cpu_kernels.FusedDropout) else None)
        fused_heads = cpu_kernels.enabled() and compute_dtype == mstype.float32
        self.qkv_heads = cpu_kernels.FusedQkvHeads() if fused_heads else None
        self.merge_heads = cpu_kernels.FusedMergeHeads() if fused_heads else None
        self.scale_tensor = Tensor([self.scale], mstype.float32)
        self.scores_matmul = ops.BatchMatMul(transpose_b=True)
        self.context_matmul = ops.BatchMatMul()

    def split_heads(self, x: Tensor) -> Tensor:
        """[B,S,H] → [B,A,S,D]."""
        b, s, _ = x.shape
        return x.reshape(b, s, self.num_heads, self.head_size).transpose(0, 2, 1, 3)

    def heads(self, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """hidden_states [B,S,H] → the query, key and value heads [B,A,S,D] each."""
        if self.qkv_heads is None:
            return (self.split_heads(self.query(hidden_states)), self.split_heads(self.key(hidden_states)),
                    self.split_heads(self.value(hidden_states)))
        # One [B*S, H] x [H, 3H] matmul, then one pass adds the biases and lays out the heads.
        b, s, _ = hidden_states.shape
        weight = ops.concat((self.query.weight, self.key.weight, self.value.weight))
        bias = ops.concat((self.query.bias, self.key.bias, self.value.bias))
        qkv = self.query.matmul(hidden_states.reshape(b * s, -1), weight)
        return self.qkv_heads(qkv.reshape(b, s, 3, self.num_heads, self.head_size),
                              bias.reshape(3, self.num_heads, self.head_size))

    def construct(self, hidden_states: Tensor, attention_bias: Tensor) -> tuple[Tensor, Tensor]:
        """hidden_states [B,S,H]; attention_bias float32 [B,1,1,S] (0 keep, -10000 masked) → (context [B,S,H],
        scores float32 [B,A,S,S], QKᵀ/√D before the mask and softmax).

        The scores are returned for layer distillation; callers that drop them cost nothing (graph mode prunes
        the unused output)."""
        q, k, v = self.heads(hidden_states)
        raw = self.scores_matmul(q, k).astype(mstype.float32)
        scores = raw * self.scale
        drop = self.dropout
        if self.masked_softmax_dropout is not None and self.training and drop.p > 0.0:
            probs = drop.counted(self.masked_softmax_dropout(raw, attention_bias, self.scale_tensor, drop.stream,
                                                             drop.step, drop.keep_prob)[0])
        elif self.masked_softmax is None:
            probs = drop(ops.softmax(scores + attention_bias, axis=-1))
        else:  # the scale, mask and softmax in one pass; `scores` is then computed only if a caller uses it
            probs = drop(self.masked_softmax(raw, attention_bias, self.scale_tensor))
        probs = probs.astype(v.dtype)
        context = self.context_matmul(probs, v)
        context = context.transpose(0, 2, 1, 3) if self.merge_heads is None else self.merge_heads(context)
        b, s = context.shape[0], context.shape[1]
        return context.reshape(b, s, self.num_heads * self.head_size), scores


class BertResidualOutput(nn.Cell):
    """dense → dropout → LayerNorm(· + residual); the `output` block after attention and after the FFN."""

    def __init__(self, in_features: int, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.dense = Dense(in_features, config.hidden_size, config.initializer_range, compute_dtype)
        self.dropout = dropout(config.hidden_dropout_prob)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        # The bias, dropout, residual add and LayerNorm as one fused kernel, drawing the dropout layer's masks.
        self.fused = (cpu_kernels.FusedResidualLayerNorm(config.layer_norm_eps)
                      if isinstance(self.dropout, cpu_kernels.FusedDropout) and compute_dtype == mstype.float32
                      else None)
        self.keep_all = Tensor([1.0], mstype.float32)

    def construct(self, x: Tensor, residual: Tensor) -> Tensor:
        """x [B,S,in], residual [B,S,H] → [B,S,H]."""
        if self.fused is None:
            return self.LayerNorm(self.dropout(self.dense(x)) + residual)
        drop = self.training and self.dropout.p > 0.0
        y = self.fused(self.dense.project(x), self.dense.bias, residual.reshape(-1, residual.shape[-1]),
                       self.LayerNorm.weight, self.LayerNorm.bias, self.dropout.stream, self.dropout.step,
                       self.dropout.keep_prob if drop else self.keep_all)[0].reshape(residual.shape)
        return self.dropout.counted(y) if drop else y


class BertAttention(nn.Cell):
    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        setattr(self, "self", BertSelfAttention(config, compute_dtype))  # HF's parameter names say `attention.self`
        self.output = BertResidualOutput(config.hidden_size, config, compute_dtype)

    def construct(self, hidden_states: Tensor, attention_bias: Tensor) -> tuple[Tensor, Tensor]:
        """→ (attention output [B,S,H], the self-attention's scores [B,A,S,S])."""
        context, scores = getattr(self, "self")(hidden_states, attention_bias)
        return self.output(context, hidden_states), scores


class BertIntermediate(nn.Cell):
    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.dense = Dense(config.hidden_size, config.intermediate_size, config.initializer_range, compute_dtype)
        self.activation = Activation(config.hidden_act)

    def construct(self, x: Tensor) -> Tensor:
        return self.activation.of_dense(self.dense, x)


class BertLayer(nn.Cell):
    """One post-LN Transformer block: attention → add & norm → FFN → add & norm."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.attention = BertAttention(config, compute_dtype)
        self.intermediate = BertIntermediate(config, compute_dtype)
        self.output = BertResidualOutput(config.intermediate_size, config, compute_dtype)

    def construct(self, hidden_states: Tensor, attention_bias: Tensor) -> tuple[Tensor, Tensor]:
        """[B,S,H] → ([B,S,H], this layer's attention scores [B,A,S,S])."""
        attention_output, scores = self.attention(hidden_states, attention_bias)
        return self.output(self.intermediate(attention_output), attention_output), scores


class BertEncoder(nn.Cell):
    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.layer = nn.CellList([BertLayer(config, compute_dtype) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states: Tensor, attention_bias: Tensor) -> Tensor:
        """[B,S,H] → the last layer's output [B,S,H]."""
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_bias)[0]
        return hidden_states

    def all_layers(self, hidden_states: Tensor,
                   attention_bias: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The same pass keeping every layer: ((the input and each layer's output, L + 1 × [B,S,H]),
        (each layer's attention scores, L × [B,A,S,S]))."""
        states, scores = (hidden_states,), ()
        for layer in self.layer:
            hidden_states, layer_scores = layer(hidden_states, attention_bias)
            states += (hidden_states,)
            scores += (layer_scores,)
        return states, scores


class BertPooler(nn.Cell):
    """tanh(dense(first token)): the sentence representation for NSP and classification."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.dense = Dense(config.hidden_size, config.hidden_size, config.initializer_range, compute_dtype)

    def construct(self, sequence_output: Tensor) -> Tensor:
        """[B,S,H] → [B,H]."""
        return ops.tanh(self.dense(sequence_output[:, 0]))


class BertPreTrainedModel(nn.Cell):
    """Adds `from_pretrained` / `save_pretrained`, implemented in `smallbert.weights`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.vocab_file: str | None = None  # remembered by from_pretrained, copied by save_pretrained

    def weights(self) -> list[Parameter]:
        """Every parameter except the dropout generators' step counters, which are run state, not weights."""
        state = {id(p) for p in cpu_kernels.rng_state(self)}
        return [p for p in self.get_parameters() if id(p) not in state]

    @classmethod
    def from_pretrained(cls, path: str, **kwargs):
        """Builds the model from `path/config.json` and loads our `.ckpt` or Hugging Face weights found there."""
        from .weights import from_pretrained

        return from_pretrained(cls, path, **kwargs)

    def save_pretrained(self, directory: str, vocab_file: str | None = None) -> None:
        """Writes `config.json`, `model.ckpt` (and `vocab.txt` when known) into `directory`."""
        from .weights import save_pretrained

        save_pretrained(self, directory, vocab_file=vocab_file)


class BertModel(BertPreTrainedModel):
    """The BERT encoder: (input_ids, token_type_ids, attention_mask) → (sequence_output, pooled_output)."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config, compute_dtype)
        self.encoder = BertEncoder(config, compute_dtype)
        self.pooler = BertPooler(config, compute_dtype) if add_pooling_layer else None
        cpu_kernels.number_sites(self)

    def construct(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                  attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """input_ids, token_type_ids, attention_mask (1 = real token): int32 [B,S].

        Returns sequence_output float32 [B,S,H] and pooled_output float32 [B,H].
        """
        sequence_output = self.encode(input_ids, token_type_ids, attention_mask)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else sequence_output[:, 0]
        return sequence_output, pooled_output.astype(mstype.float32)

    def encode(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
               attention_mask: Tensor | None = None) -> Tensor:
        """The encoder without the pooler: int32 [B,S] each → sequence_output float32 [B,S,H]."""
        embedded, attention_bias = self.embed(input_ids, token_type_ids, attention_mask)
        return self.encoder(embedded, attention_bias).astype(mstype.float32)

    def all_layers(self, input_ids: Tensor, token_type_ids: Tensor,
                   attention_mask: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Every layer's output, for layer distillation: int32 [B,S] each → ((the embeddings and each layer's
        output, L + 1 × [B,S,H] in compute_dtype), (each layer's attention scores, L × float32 [B,A,S,S]))."""
        return self.encoder.all_layers(*self.embed(input_ids, token_type_ids, attention_mask))

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None,
              attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """int32 [B,S] each → (the embeddings [B,S,H], the attention bias float32 [B,1,1,S]: 0 or -10000)."""
        if token_type_ids is None:
            token_type_ids = ops.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = ops.ones_like(input_ids)
        attention_bias = (1.0 - attention_mask.astype(mstype.float32)) * -10000.0
        attention_bias = attention_bias.reshape(input_ids.shape[0], 1, 1, input_ids.shape[1])
        return self.embeddings(input_ids, token_type_ids), attention_bias


def gather_positions(sequence_output: Tensor, positions: Tensor) -> Tensor:
    """sequence_output [B,S,H], positions int32 [B,P] → the vectors at those positions, [B,P,H]."""
    b, s, h = sequence_output.shape
    offsets = (ops.arange(b, dtype=mstype.int32) * s).reshape(b, 1)
    flat = ops.gather(sequence_output.reshape(b * s, h), (positions + offsets).reshape(-1), 0)
    return flat.reshape(b, positions.shape[1], h)


class BertPredictionHeadTransform(nn.Cell):
    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.dense = Dense(config.hidden_size, config.hidden_size, config.initializer_range, compute_dtype)
        self.activation = Activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def construct(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.activation.of_dense(self.dense, x))


class BertLMPredictionHead(nn.Cell):
    """transform → decoder tied to the word embeddings + output `bias` [V]."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config, compute_dtype)
        self.bias = Parameter(initializer("zeros", (config.vocab_size,), mstype.float32), name="bias")
        self.compute_dtype = compute_dtype
        self.matmul = ops.MatMul(transpose_b=True)
        self.add_bias = BiasAdd()

    def construct(self, x: Tensor, word_embeddings: Tensor, add_bias: bool = True) -> Tensor:
        """x [N,H], word_embeddings [V,H] → float32 logits [N,V]; without `bias` if not add_bias."""
        h = self.transform(x).astype(self.compute_dtype)
        logits = self.matmul(h, word_embeddings.astype(self.compute_dtype)).astype(mstype.float32)
        return self.add_bias(logits, self.bias) if add_bias else logits


class BertPreTrainingHeads(nn.Cell):
    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, compute_dtype)
        self.seq_relationship = Dense(config.hidden_size, 2, config.initializer_range, compute_dtype)


class BertForPreTraining(BertPreTrainedModel):
    """BERT with the masked-LM head (computed only at the masked positions) and the next-sentence head."""

    def __init__(self, config: BertConfig, compute_dtype=mstype.float32):
        super().__init__(config)
        self.bert = BertModel(config, compute_dtype)
        self.cls = BertPreTrainingHeads(config, compute_dtype)
        cpu_kernels.number_sites(self)

    def construct(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor,
                  masked_lm_positions: Tensor, output_biases: bool = True) -> tuple[Tensor, Tensor]:
        """input_ids, token_type_ids, attention_mask int32 [B,S]; masked_lm_positions int32 [B,P].

        Returns mlm_logits float32 [B,P,V] and nsp_logits float32 [B,2] (index 1 = "B is a random sentence").
        With output_biases False both come before their output biases, `cls.predictions.bias` and
        `cls.seq_relationship.bias`, for a loss that adds them itself (`cpu_kernels.FusedSoftmaxNll`).
        """
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask)
        nsp = self.cls.seq_relationship
        nsp_logits = (nsp(pooled_output) if output_biases else nsp.project(pooled_output)).astype(mstype.float32)
        return self.masked_lm_logits(sequence_output, masked_lm_positions, output_biases), nsp_logits

    def masked_lm_only(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor,
                       masked_lm_positions: Tensor, output_bias: bool = True) -> Tensor:
        """The MLM logits float32 [B,P,V] alone, without running the pooler and NSP head (`--mlm_only`)."""
        sequence_output = self.bert.encode(input_ids, token_type_ids, attention_mask)
        return self.masked_lm_logits(sequence_output, masked_lm_positions, output_bias)

    def masked_lm_logits(self, sequence_output: Tensor, masked_lm_positions: Tensor,
                         output_bias: bool = True) -> Tensor:
        """The MLM head alone: sequence_output float32 [B,S,H], masked_lm_positions int32 [B,P] → logits [B,P,V]."""
        masked = gather_positions(sequence_output, masked_lm_positions)
        b, p, h = masked.shape
        mlm_logits = self.cls.predictions(masked.reshape(b * p, h), self.bert.embeddings.word_embeddings.weight,
                                          output_bias)
        return mlm_logits.reshape(b, p, -1)


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT → dropout(pooled_output) → linear classifier."""

    def __init__(self, config: BertConfig, num_labels: int = 2, compute_dtype=mstype.float32):
        super().__init__(config)
        self.num_labels = num_labels
        self.bert = BertModel(config, compute_dtype)
        self.dropout = dropout(config.hidden_dropout_prob)
        self.classifier = Dense(config.hidden_size, num_labels, config.initializer_range, compute_dtype)
        cpu_kernels.number_sites(self)

    def construct(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """int32 [B,S] each → float32 logits [B,num_labels]."""
        # By index, not `_, pooled = ...`: an unpacked, unused sequence_output makes MindSpore's graph compiler warn
        # "Some side effect nodes were eliminated by mistake" (the dropouts' step counters) on every compile.
        pooled_output = self.bert(input_ids, token_type_ids, attention_mask)[1]
        return self.classifier(self.dropout(pooled_output)).astype(mstype.float32)


