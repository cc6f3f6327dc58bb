"""Analytic accounting: parameter counts, cache bytes per token, and FLOPs per token (dense vs DSA).

Parameters are counted from the config alone (they equal `sum(p.numel())` of the built model,
tested) and exclude the MTP layer. "Activated" counts what one token touches: every non-expert
weight (embeddings and head included) plus `num_experts_per_tok` routed and all shared experts.

FLOPs count multiply-adds as 2 and include only matmul-like work (norms, RoPE, softmax omitted).
Per token at context L (the token attends to L keys, itself included):
- weights: 2 x activated matmul parameters (the embedding lookup is free, the head is not). This
  includes kv_b_proj once, which is what both forms spend on it: MHA expands each token's latent
  once; the absorbed form folds W_uk into the query and W_uv into the output, the same count.
- attention over n keys, MHA form: 2 H n (dn + dr + dv); absorbed form: 2 H n (C + dr + C).
- dense: n = L. DSA: n = min(L, k), plus the indexer over all L keys: 2 L H_I (D_I + 1).
Decode uses the absorbed form (it reads the compact latent cache); prefill the cheaper of the two
(MHA for these shapes), its per-token cost averaged over an L-token prompt (token i sees i keys).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dsv32.config import ModelConfig


@dataclass
class ParamCounts:
    embeddings: int  # embed_tokens + lm_head
    attention: int  # MLA projections and their norms, all layers
    indexers: int
    dense_mlp: int
    routed_experts: int
    shared_experts: int
    gates: int  # router weights and correction biases
    norms: int  # block and final RMSNorms
    total: int
    total_without_indexers: int
    activated: int
    activated_without_indexers: int


def attention_params(c: ModelConfig) -> int:
    h = c.num_attention_heads
    return (
        c.hidden_size * c.q_lora_rank + c.q_lora_rank
        + c.q_lora_rank * h * c.qk_head_dim
        + c.hidden_size * c.latent_dim + c.kv_lora_rank
        + c.kv_lora_rank * h * (c.qk_nope_head_dim + c.v_head_dim)
        + h * c.v_head_dim * c.hidden_size
    )  # fmt: skip


def indexer_params(c: ModelConfig) -> int:
    d = c.index_head_dim
    return c.q_lora_rank * c.index_n_heads * d + c.hidden_size * d + 2 * d + c.hidden_size * c.index_n_heads


def count_params(c: ModelConfig) -> ParamCounts:
    n_moe = len(c.moe_layers)
    n_dense = c.num_hidden_layers - n_moe
    expert = 3 * c.hidden_size * c.moe_intermediate_size
    embeddings = (
        2 * c.vocab_size * c.hidden_size if not c.tie_word_embeddings else c.vocab_size * c.hidden_size
    )
    attention = c.num_hidden_layers * attention_params(c)
    indexers = c.num_hidden_layers * indexer_params(c)
    dense_mlp = n_dense * 3 * c.hidden_size * c.intermediate_size
    routed = n_moe * c.n_routed_experts * expert
    shared = n_moe * c.n_shared_experts * expert
    gates = n_moe * (c.n_routed_experts * c.hidden_size + c.n_routed_experts)
    norms = (2 * c.num_hidden_layers + 1) * c.hidden_size
    total = embeddings + attention + indexers + dense_mlp + routed + shared + gates + norms
    activated = total - routed + n_moe * c.num_experts_per_tok * expert
    return ParamCounts(
        embeddings, attention, indexers, dense_mlp, routed, shared, gates, norms,
        total, total - indexers, activated, activated - indexers,
    )  # fmt: skip


def cache_bytes_per_token(c: ModelConfig) -> dict[str, int]:
    """Per token, all layers: bf16 latent (c_kv | k_pe), indexer keys in FP8 (+ one fp32 scale per
    128-value block) or bf16."""
    latent = c.latent_dim * 2
    fp8_key = c.index_head_dim + 4 * max(1, c.index_head_dim // 128)
    bf16_key = c.index_head_dim * 2
    n = c.num_hidden_layers
    return {
        "latent_bf16_per_layer": latent,
        "indexer_fp8_per_layer": fp8_key,
        "indexer_bf16_per_layer": bf16_key,
        "total_fp8_indexer": n * (latent + fp8_key),
        "total_bf16_indexer": n * (latent + bf16_key),
        "dense_mla_latent_only": n * latent,
    }


def _matmul_params_per_token(c: ModelConfig, with_indexers: bool) -> int:
    """Activated parameters that take part in a matmul: not the embedding lookup, norms or biases."""
    p = count_params(c)
    activated = p.activated if with_indexers else p.activated_without_indexers
    vector_params = (
        p.norms
        + len(c.moe_layers) * c.n_routed_experts
        + c.num_hidden_layers
        * (c.q_lora_rank + c.kv_lora_rank + (2 * c.index_head_dim if with_indexers else 0))
    )
    return activated - c.vocab_size * c.hidden_size - vector_params


def attention_flops(c: ModelConfig, context: int, form: str, sparse: bool) -> float:
    """Attention FLOPs for one token attending to `context` keys, all layers (see module docstring)."""
    h, dn, dr, dv, kv = (
        c.num_attention_heads,
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    )
    keys = min(context, c.index_topk) if sparse else context
    per_key = (dn + dr + dv) if form == "mha" else (kv + dr + kv)
    per_layer = 2 * h * keys * per_key
    if sparse:
        per_layer += 2 * context * c.index_n_heads * (c.index_head_dim + 1)
    return float(c.num_hidden_layers * per_layer)


def _prefill_attention(c: ModelConfig, context: int, form: str, sparse: bool) -> float:
    """Mean attention FLOPs per token over a `context`-token prompt (token i attends to i keys)."""

    def per_position(i: int) -> float:
        return attention_flops(c, i, form, sparse)

    k = c.index_topk if sparse else context
    # per_position is affine in i on [1, k] and on [k + 1, L]: sum each piece exactly.
    total = _sum_affine(per_position, 1, min(context, k)) + _sum_affine(per_position, k + 1, context)
    return total / context


def flops_per_token(c: ModelConfig, context: int) -> dict[str, float]:
    """FLOPs per token at context L: decode (one new token over L keys, absorbed form) and prefill
    (mean over an L-token prompt, cheaper form), dense MLA vs DSA, and the DSA/dense ratios."""
    dense_weights = 2.0 * _matmul_params_per_token(c, with_indexers=False)
    dsa_weights = 2.0 * _matmul_params_per_token(c, with_indexers=True)
    attn = {
        "decode_attention_dense": attention_flops(c, context, "absorbed", sparse=False),
        "decode_attention_dsa": attention_flops(c, context, "absorbed", sparse=True),
        "prefill_attention_dense": min(_prefill_attention(c, context, f, False) for f in ("mha", "absorbed")),
        "prefill_attention_dsa": min(_prefill_attention(c, context, f, True) for f in ("mha", "absorbed")),
    }
    decode_dense = dense_weights + attn["decode_attention_dense"]
    decode_dsa = dsa_weights + attn["decode_attention_dsa"]
    prefill_dense = dense_weights + attn["prefill_attention_dense"]
    prefill_dsa = dsa_weights + attn["prefill_attention_dsa"]
    return {
        "context": context,
        "decode_dense": decode_dense,
        "decode_dsa": decode_dsa,
        "prefill_dense": prefill_dense,
        "prefill_dsa": prefill_dsa,
        **attn,
        "decode_ratio_dsa_over_dense": decode_dsa / decode_dense,
        "prefill_ratio_dsa_over_dense": prefill_dsa / prefill_dense,
    }


def _sum_affine(f, lo: int, hi: int) -> float:
    """sum_{i=lo}^{hi} f(i) for f affine in i on [lo, hi]."""
    if hi < lo:
        return 0.0
    return (f(lo) + f(hi)) * (hi - lo + 1) / 2


def model_info(c: ModelConfig, context: int) -> dict:
    return {
        "params": asdict(count_params(c)),
        "cache_bytes_per_token": cache_bytes_per_token(c),
        "flops_per_token": flops_per_token(c, context),
    }
