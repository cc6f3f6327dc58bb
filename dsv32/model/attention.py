"""One layer's attention: MLA plus its lightning indexer, dense or DeepSeek Sparse Attention.

The indexer always reads DETACHED inputs (x and the query latent qr): it learns only from its own
KL loss, and that loss sends no gradient into the main model. The selection itself is a top-k and
carries no gradient either, so the language-modelling loss never reaches the indexer.

Indexer losses (SPEC section 2), as the mean over tokens of KL(p[t] || softmax(I[t])):
- "dense" (warm-up): p = head-mean of the dense attention probabilities over all causal keys.
- "sparse": p = head-mean of the sparse attention probabilities over S_t, I restricted to S_t.
Both are computed per chunk of queries, so no [H, L, L] tensor is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv32.config import ModelConfig
from dsv32.model.indexer import Indexer, causal_mask, index_scores, kl_to_indexer, select_topk
from dsv32.model.mla import MLA, _chunk_size, attend_latent, sparse_kernel


@dataclass
class AttentionAux:
    topk_indices: torch.Tensor | None = None  # [B, T, k], -1 = empty slot
    index_scores: torch.Tensor | None = None  # [B, T, S], -inf where not visible
    indexer_kl: torch.Tensor | None = None  # scalar: mean over tokens of the KL


class Attention(MLA):
    """MLA with the indexer as a child (official names: `self_attn.indexer.*`)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.indexer = Indexer(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        q_pos_BT: torch.Tensor,
        attention: str = "dense",
        form: str = "mha",
        indexer_loss: str | None = None,
        return_index_scores: bool = False,
        return_indices: bool = False,
        sparse_impl: str = "auto",
        index_topk: int | None = None,
    ) -> tuple[torch.Tensor, AttentionAux]:
        if attention not in ("dense", "sparse"):
            raise ValueError(f"attention must be 'dense' or 'sparse', got {attention!r}")
        if indexer_loss not in (None, "dense", "sparse"):
            raise ValueError(f"indexer_loss must be None, 'dense' or 'sparse', got {indexer_loss!r}")
        if indexer_loss == "sparse" and attention != "sparse":
            raise ValueError("indexer_loss='sparse' needs attention='sparse'")
        q_nope, q_pe, qr = self.query(x, cos, sin)
        c_kv, k_pe = self.latent(x, cos, sin)
        aux = AttentionAux()

        use_indexer = attention == "sparse" or indexer_loss or return_index_scores or return_indices
        if use_indexer:
            x_in, qr_in = x.detach(), qr.detach()
            # Without an indexer loss nothing differentiates through the indexer: skip its graph.
            with torch.set_grad_enabled(torch.is_grad_enabled() and indexer_loss is not None):
                k_I = self.indexer.keys(x_in, cos, sin)
                q_I, w_I = self.indexer.queries(x_in, qr_in, cos, sin)
            with torch.no_grad():
                aux.topk_indices, aux.index_scores = select_topk(
                    q_I, w_I, k_I, q_pos_BT, index_topk or self.indexer.topk, keep_scores=return_index_scores
                )

        if attention == "sparse":
            out, p_sel = self._sparse_attention(
                q_nope, q_pe, c_kv, k_pe, q_pos_BT, aux.topk_indices, sparse_impl, indexer_loss == "sparse"
            )
            if indexer_loss == "sparse":
                aux.indexer_kl = self._sparse_kl(q_I, w_I, k_I, aux.topk_indices, p_sel)
        elif form == "mha":
            out = self.mha(q_nope, q_pe, c_kv, k_pe, q_pos_BT)
        elif form == "absorbed":
            o_lat, _ = attend_latent(self.absorb(q_nope), q_pe, c_kv, k_pe, q_pos_BT, self.scale)
            out = self.output_from_latent(o_lat)
        else:
            raise ValueError(f"form must be 'mha' or 'absorbed', got {form!r}")

        if indexer_loss == "dense":
            aux.indexer_kl = self._dense_kl(q_nope, q_pe, c_kv, k_pe, q_pos_BT, q_I, w_I, k_I)
        if not return_indices and attention != "sparse":
            aux.topk_indices = None
        return out, aux

    def _sparse_attention(self, q_nope, q_pe, c_kv, k_pe, q_pos_BT, indices_BTK, impl, want_probs):
        """DSA output [B, T, hidden] and, if asked, the head-mean probabilities over the selected
        slots [B, T, k] (detached: only the indexer's KL target uses them).

        "mha" (and "auto" where the absorbed form would score every key anyway) runs the selection
        as an SDPA mask in MHA form: the same attention at fewer multiply-adds per query-key pair,
        forward and backward; the probabilities, which SDPA does not return, then come from a
        no-grad pass of the absorbed kernel."""
        latent_width = self.kv_rank + self.dr
        if impl == "auto":
            s, k = c_kv.shape[1], indices_BTK.shape[-1]
            impl = "mha" if sparse_kernel(k, latent_width, self.n_heads, s) == "masked" else "auto"
        if impl != "mha":
            o_lat, p_sel = attend_latent(
                self.absorb(q_nope), q_pe, c_kv, k_pe, q_pos_BT, self.scale,
                indices_BTK=indices_BTK, impl=impl, want_head_mean=want_probs,
            )  # fmt: skip
            return self.output_from_latent(o_lat), (p_sel.detach() if want_probs else None)
        out, p_sel = self.mha(q_nope, q_pe, c_kv, k_pe, q_pos_BT, indices_BTK=indices_BTK), None
        if want_probs:
            with torch.no_grad():
                _, p_sel = attend_latent(
                    self.absorb(q_nope), q_pe, c_kv, k_pe, q_pos_BT, self.scale,
                    indices_BTK=indices_BTK, want_head_mean=True,
                )  # fmt: skip
        return out, p_sel

    def _dense_kl(self, q_nope, q_pe, c_kv, k_pe, q_pos_BT, q_I, w_I, k_I) -> torch.Tensor:
        b, t, h, _ = q_nope.shape
        s = c_kv.shape[1]
        with torch.no_grad():
            q_abs = self.absorb(q_nope.detach())
        total = q_I.new_zeros((), dtype=torch.float32)
        step = _chunk_size(b, h, s, None)
        for t0 in range(0, t, step):
            sl = slice(t0, t0 + step)
            with torch.no_grad():
                _, p_BTS = attend_latent(
                    q_abs[:, sl], q_pe[:, sl].detach(), c_kv.detach(), k_pe.detach(), q_pos_BT[:, sl],
                    self.scale, want_head_mean=True,
                )  # fmt: skip
            scores_BTS = index_scores(q_I[:, sl], w_I[:, sl], k_I)
            total = total + kl_to_indexer(p_BTS, scores_BTS, causal_mask(q_pos_BT[:, sl], s))
        return total / (b * t)

    @staticmethod
    def _sparse_kl(q_I, w_I, k_I, indices_BTK, p_BTK) -> torch.Tensor:
        b, t, k = indices_BTK.shape
        s = k_I.shape[1]
        flat_k = k_I.reshape(b * s, -1)
        offsets = (torch.arange(b, device=k_I.device) * s).view(b, 1, 1)
        picked_BTKD = flat_k[(indices_BTK.clamp(min=0) + offsets).flatten()].view(b, t, k, -1)
        dots_BTHK = torch.einsum("bthd,btkd->bthk", q_I.float(), picked_BTKD.float())
        scores_BTK = torch.einsum("bthk,bth->btk", dots_BTHK.relu(), w_I)
        return kl_to_indexer(p_BTK, scores_BTK, indices_BTK >= 0) / (b * t)
