"""Decoder blocks and the causal language model `DeepseekV32ForCausalLM`.

Block: h = x + attn(input_layernorm(x)); y = h + mlp(post_attention_layernorm(h)), where mlp is a
dense SwiGLU for the first `first_k_dense_replace` layers and DeepSeekMoE after. Parameter names
are the official Hugging Face ones, so `state_dict()` keys are checkpoint tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dsv32.config import ModelConfig
from dsv32.model.attention import Attention
from dsv32.model.layers import RMSNorm, SwiGLU
from dsv32.model.moe import MoE, expert_load, sequence_balance_loss
from dsv32.model.rope import rope_cos_sin


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # [B, T, V]; [N, V] (the true positions, row-major) when `logits_at` is given
    topk_indices: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, T, k]
    index_scores: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, T, S]
    routing: dict[int, torch.Tensor] = field(default_factory=dict)  # MoE layer -> expert ids [B, T, k]
    router_load: dict[int, torch.Tensor] = field(default_factory=dict)  # MoE layer -> [E] slot counts
    indexer_loss: torch.Tensor | None = None  # sum over layers of each layer's mean KL
    balance_loss: torch.Tensor | None = None  # sum over MoE layers of the sequence-wise loss


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = (
            MoE(config)
            if config.is_moe_layer(layer)
            else SwiGLU(config.hidden_size, config.intermediate_size)
        )


class DeepseekV32Model(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DeepseekV32ForCausalLM(nn.Module):
    """The DeepSeek-V3.2 language model (MTP head not included).

    forward(input_ids, attention="dense" | "sparse", ...) returns `CausalLMOutput`; see `forward`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = DeepseekV32Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        self.reset_parameters()

    def tie_weights(self) -> None:
        """With `tie_word_embeddings` the output head is the input embedding (one Parameter). Loading
        with assign=True replaces parameters, so loaders call this again afterwards."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Normal(0, initializer_range) for matrices (the token embedding: embedding_initializer_range
        when set, which a tied head shares); norms to 1 (and 0 bias); expert bias to 0."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        embedding_std = self.config.embedding_initializer_range or std
        for name, p in self.named_parameters():
            if p.device.type == "meta":
                continue
            if p.dim() >= 2:
                scale = embedding_std if name == "model.embed_tokens.weight" else std
                values = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale
                p.copy_(values.to(p.device, p.dtype))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
        for buf_name, buf in self.named_buffers():
            if buf_name.endswith("e_score_correction_bias") and buf.device.type != "meta":
                buf.zero_()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention: str = "dense",
        positions: torch.Tensor | None = None,
        form: str = "mha",
        replay_routing: dict[int, torch.Tensor] | None = None,
        return_routing: bool = False,
        return_indices: bool = False,
        return_index_scores: bool = False,
        indexer_loss: str | None = None,
        balance_loss: bool = False,
        sparse_impl: str = "auto",
        index_topk: int | None = None,
        logits_at: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        """Run the model on token ids [B, T].

        attention: "dense" (causal MLA) or "sparse" (DSA: each query attends to its indexer top-k).
        positions: absolute positions [B, T] or [T] (default 0..T-1).
        form: dense-attention form, "mha" (expanded heads, SDPA) or "absorbed" (latent MQA).
        replay_routing: MoE layer -> expert ids [B, T, k] to reuse instead of choosing ("keep routing").
        return_routing / return_indices / return_index_scores: fill those fields of the output.
        indexer_loss: None, "dense" (warm-up KL) or "sparse" (KL over the selected set).
        balance_loss: also compute the sequence-wise MoE balance loss.
        index_topk: override the config's top-k (e.g. to evaluate other budgets).
        sparse_impl: the sparse attention kernel, "gather" / "masked" (absorbed form, see
            `model.mla`), "mha" (the selection as an SDPA mask in MHA form) or "auto" (MHA form
            where the absorbed form would be "masked").
        logits_at: bool [B, T]; project only these positions to the vocabulary (out.logits is then
            [N, V]). Losses on a few tokens per row (answers, assistant turns) skip the rest of the
            output head, which at small widths costs as much as the layers.
        """
        b, t = input_ids.shape
        if positions is None:
            positions = torch.arange(t, device=input_ids.device)
        q_pos_BT = positions.expand(b, t) if positions.dim() == 1 else positions
        cos, sin = rope_cos_sin(self.config, q_pos_BT)
        out = CausalLMOutput(logits=torch.empty(0))
        kl_terms, balance_terms = [], []
        h = self.model.embed_tokens(input_ids)
        for block in self.model.layers:
            i = block.layer
            attn_out, aux = block.self_attn(
                block.input_layernorm(h), cos, sin, q_pos_BT, attention=attention, form=form,
                indexer_loss=indexer_loss, return_index_scores=return_index_scores,
                return_indices=return_indices, sparse_impl=sparse_impl, index_topk=index_topk,
            )  # fmt: skip
            h = h + attn_out
            if aux.topk_indices is not None and (return_indices or attention == "sparse"):
                out.topk_indices[i] = aux.topk_indices
            if aux.index_scores is not None:
                out.index_scores[i] = aux.index_scores
            if aux.indexer_kl is not None:
                kl_terms.append(aux.indexer_kl)
            mlp_in = block.post_attention_layernorm(h)
            if isinstance(block.mlp, MoE):
                replay = None if replay_routing is None else replay_routing.get(i)
                mlp_out, routing = block.mlp(mlp_in, replay)
                out.router_load[i] = expert_load(routing, self.config.n_routed_experts)
                if return_routing:
                    out.routing[i] = routing.expert_ids.view(b, t, -1)
                if balance_loss:
                    balance_terms.append(sequence_balance_loss(routing, b, self.config.num_experts_per_tok))
            else:
                mlp_out = block.mlp(mlp_in)
            h = h + mlp_out
        if logits_at is not None:
            if logits_at.shape != (b, t):
                got = tuple(logits_at.shape)
                raise ValueError(f"logits_at: expected a bool mask of shape {(b, t)}, got {got}")
            h = h[logits_at]
        out.logits = self.lm_head(self.model.norm(h))
        out.indexer_loss = torch.stack(kl_terms).sum() if kl_terms else None
        out.balance_loss = torch.stack(balance_terms).sum() if balance_terms else None
        return out

    def lm_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over positions where mask is true (all when mask is None).
        Logits of the masked positions only ([N, V], see `forward(logits_at=)`) pair with targets[mask]."""
        if mask is not None and logits.dim() == 2:
            return F.cross_entropy(logits.float(), targets[mask]) if mask.any() else logits.sum() * 0.0
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        if mask is None:
            return losses.mean()
        mask = mask.flatten().float()
        return (losses * mask).sum() / mask.sum().clamp(min=1.0)

    def indexer_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if ".indexer." in n]

    def gates(self) -> dict[int, nn.Module]:
        return {blk.layer: blk.mlp.gate for blk in self.model.layers if isinstance(blk.mlp, MoE)}


def build_model(
    config: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> DeepseekV32ForCausalLM:
    """Construct and initialise a model (seeded). device="meta" builds shapes only (no memory)."""
    if str(device) == "meta":
        with torch.device("meta"):
            return DeepseekV32ForCausalLM(config).to(dtype)
    model = DeepseekV32ForCausalLM(config)
    model.reset_parameters(seed)
    model.to(device=device, dtype=dtype)
    with torch.no_grad():  # router and indexer weights stay fp32 whatever the model dtype (as officially)
        for name, module in model.named_modules():
            if name.endswith("mlp.gate") or name.endswith("indexer.weights_proj"):
                module.float()
    return model
