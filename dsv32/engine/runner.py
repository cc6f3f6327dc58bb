"""The model's own modules run over the paged cache: chunked prefill and batched single-token decode.

Every number comes from the model's modules (`Attention.query/latent/absorb/output_from_latent`,
`Indexer.keys/queries`, `select_topk`, `attend_latent`, `MoE`), so the engine computes what
`model(input_ids, attention=...)` computes; the full forward is the reference the tests hold it to.
Per layer and step:
1. q, the latent `c_kv | k_pe` and the indexer key of the NEW tokens; the latter two go into the cache.
2. Sparse (DSA), once a sequence in the step is longer than top-k (before, the selection is every
   causal key and the step runs dense absorbed attention, which is the same set): the indexer
   scores the new queries against ALL cached indexer keys of the sequence
   (dequantised) and keeps the causal top-k.
   - decode (one token per sequence): only the k selected latent rows are read from the cache and
     attended in absorbed (MQA) form;
   - prefill (a chunk of one sequence): the chunk's latent rows are read once and each query attends,
     absorbed, to its own selection.
3. Dense: decode attends in absorbed form over the whole cached latent; prefill uses the MHA form
   (the cheaper one for prefill).
4. MLP or MoE (the model's gate; routed experts batched by `engine.experts.StackedExperts`); the
   MoE layers' chosen expert ids are returned for the records ("keep routing").
Only the last position's logits are computed (that is all sampling needs).

Decode has its own loop (`_decode`) built for per-op overhead, which dominates at one token per
sequence: fused input projections, a rope table, `F.rms_norm`, the absorbed attention as three
batched matmuls over the rows read from the cache (dense, or the k selected rows), masks and
row indices built once per step for all layers, and inference mode. It computes the same thing as
the generic loop (`_forward`, used for prefill) up to float rounding; the tests hold both to the
full forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dsv32.engine.cache import PagedCache
from dsv32.engine.experts import StackedExperts
from dsv32.engine.fused import FusedInput, RopeTable, rms_norm, rotate
from dsv32.model.indexer import fp8_emulate, hadamard_matrix, select_topk
from dsv32.model.mla import attend_latent, sparse_kernel
from dsv32.model.moe import MoE
from dsv32.model.rope import rope_cos_sin
from dsv32.model.transformer import DeepseekV32ForCausalLM


@dataclass
class StepResult:
    logits: torch.Tensor  # [B, V] at each sequence's last new position (fp32)
    routing: torch.Tensor | None  # [B, T, n_moe_layers, k] int16 expert ids of the new tokens, or None
    # (None also when the caller did not ask for routing)


class ModelRunner:
    """Runs `model` over `cache`. attention: "sparse" (DSA, the model as trained) or "dense"."""

    def __init__(self, model: DeepseekV32ForCausalLM, cache: PagedCache, attention: str = "sparse",
                 prefill_chunk: int = 512):  # fmt: skip
        if attention not in ("dense", "sparse"):
            raise ValueError(f"attention must be 'dense' or 'sparse', got {attention!r}")
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.model, self.cache, self.attention, self.prefill_chunk = model, cache, attention, prefill_chunk
        self.config = model.config
        self.moe_layers = self.config.moe_layers
        self.dtype = model.lm_head.weight.dtype
        self.experts = {b.layer: StackedExperts(b.mlp) for b in model.model.layers if isinstance(b.mlp, MoE)}
        self.fused = {b.layer: FusedInput(b.self_attn) for b in model.model.layers}
        self.rope = RopeTable(self.config, self.config.max_position_embeddings, model.device)

    @torch.inference_mode()
    def prefill(self, seq_id: object, token_ids: list[int], start: int, routing: bool = True) -> StepResult:
        """Feed tokens at positions start.. of one sequence in chunks; logits after the last one."""
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        want_routing, chunks, result = routing, [], None
        for c0 in range(0, len(token_ids), self.prefill_chunk):
            chunk = token_ids[c0 : c0 + self.prefill_chunk]
            result = self._forward([seq_id], torch.tensor([chunk]), [start + c0], want_routing)
            if result.routing is not None:
                chunks.append(result.routing)
        return StepResult(result.logits, torch.cat(chunks, dim=1) if chunks else None)

    @torch.inference_mode()
    def prefill_batch(self, seq_ids: list[object], chunks: list[list[int]], starts: list[int],
                      routing: bool = True) -> StepResult:  # fmt: skip
        """One chunk of EQUAL length for each of several sequences, in one forward (no re-chunking)."""
        if not chunks or any(len(c) != len(chunks[0]) or not c for c in chunks):
            raise ValueError("prefill_batch needs non-empty chunks of equal length")
        return self._forward(seq_ids, torch.tensor(chunks), starts, routing)

    @torch.inference_mode()
    def decode(self, seq_ids: list[object], token_ids: list[int], positions: list[int],
               routing: bool = True) -> StepResult:  # fmt: skip
        """One new token for each sequence (batched); token i sits at positions[i]."""
        return self._decode(seq_ids, token_ids, positions, routing)

    def _decode(self, seq_ids, token_ids, positions, want_routing) -> StepResult:
        cache, device, model = self.cache, self.model.device, self.model
        b = len(seq_ids)
        rows = [cache.seq_rows(sid, p + 1) for sid, p in zip(seq_ids, positions)]
        # Context rows padded with row 0 (hidden by the mask: beyond each sequence's position).
        ctx_rows_BS = rows[0][None] if b == 1 else torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        pos_BT = torch.tensor(positions, device=device)[:, None]
        new_rows_B = ctx_rows_BS.gather(1, pos_BT)[:, 0]
        hidden_BS = torch.arange(ctx_rows_BS.shape[1], device=device) > pos_BT
        rot_mla, rot_index = self.rope.matrices(pos_BT[:, 0])
        if self.config.index_hadamard:  # the indexer's Hadamard rotation folds into the same matrix
            d = self.config.index_head_dim
            rot_index = rot_index @ hadamard_matrix(d, device, rot_index.dtype)
        pending_keys = []  # indexer keys not read in this step, written for all layers at the end
        h = model.model.embed_tokens(torch.tensor(token_ids, device=device)[:, None])
        routing = []
        for block in model.model.layers:
            x = rms_norm(h, block.input_layernorm)
            h = h + self._decode_attention(block.layer, block.self_attn, x, rot_mla, rot_index, pos_BT,
                                           ctx_rows_BS, new_rows_B, hidden_BS, pending_keys)  # fmt: skip
            mlp_in = rms_norm(h, block.post_attention_layernorm)
            if isinstance(block.mlp, MoE):
                mlp_out, r = self.experts[block.layer](mlp_in)
                if want_routing:
                    routing.append(r.expert_ids.view(b, 1, -1).to(torch.int16))
            else:
                mlp_out = block.mlp(mlp_in)
            h = h + mlp_out
        if pending_keys:
            layers, keys = zip(*pending_keys)
            cache.write_index_keys(list(layers), new_rows_B, torch.stack(keys))
        logits = model.lm_head(rms_norm(h[:, -1], model.model.norm)).float()
        return StepResult(logits, torch.stack(routing, dim=2) if routing else None)

    def _decode_attention(self, layer, attn, x, rot_mla, rot_index, pos_BT, ctx_rows_BS, new_rows_B,
                          hidden_BS, pending_keys):  # fmt: skip
        cache, dtype, idx = self.cache, x.dtype, attn.indexer
        b, h, dn, dr, c = x.shape[0], attn.n_heads, attn.dn, attn.dr, attn.kv_rank
        q_a, kv_a, k_raw, *w_raw = self.fused[layer](x)
        qr = rms_norm(q_a, attn.q_a_layernorm)
        q_nope, q_pe = attn.q_b_proj(qr).view(b, 1, h, dn + dr).split([dn, dr], -1)
        q_pe = rotate(q_pe.reshape(b, h, dr), rot_mla)
        c_kv, k_pe = kv_a.split([c, dr], -1)
        c_kv, k_pe = rms_norm(c_kv, attn.kv_a_layernorm), rotate(k_pe, rot_mla)
        k_index = self._index_rope(idx, idx.k_norm(k_raw), rot_index)  # [B, 1, D_I]
        cache.write_latent(layer, new_rows_B, torch.cat((c_kv, k_pe), dim=-1)[:, 0])
        if self.attention == "sparse" and ctx_rows_BS.shape[1] > idx.topk:
            cache.write_index_keys([layer], new_rows_B, k_index[None, :, 0])
            keys_BSD = cache.read_index_keys(layer, ctx_rows_BS).to(k_index.dtype)
            q_index, w_index = self._index_queries(idx, x, qr, w_raw, rot_index)
            sel_BTK, _ = select_topk(q_index, w_index, keys_BSD, pos_BT, idx.topk)
            sel_BK = sel_BTK[:, 0]
            rows_BK, hidden_BK = ctx_rows_BS.gather(1, sel_BK.clamp(min=0)), sel_BK < 0
        else:  # dense, or every sequence within top-k (the selection is then every causal key)
            pending_keys.append((layer, k_index[:, 0]))
            rows_BK, hidden_BK = ctx_rows_BS, hidden_BS
        kv_BKL = cache.latent[layer][rows_BK]
        if kv_BKL.dtype != dtype:
            kv_BKL = kv_BKL.to(dtype)
        w_uk, w_uv = attn._kv_b()  # [H, dn, C], [H, dv, C]
        q_abs_HBC = torch.bmm(q_nope.view(b, h, dn).transpose(0, 1), w_uk)
        q_BHL = torch.cat((q_abs_HBC.transpose(0, 1), q_pe), dim=-1)
        scores_BHK = torch.bmm(q_BHL, kv_BKL.transpose(1, 2)).float().mul_(attn.scale)
        probs_BHK = torch.softmax(scores_BHK.masked_fill_(hidden_BK[:, None], float("-inf")), dim=-1)
        o_lat_BHC = torch.bmm(probs_BHK.to(dtype), kv_BKL[..., :c])
        o_HBV = torch.bmm(o_lat_BHC.transpose(0, 1), w_uv.transpose(1, 2))
        return attn.o_proj(o_HBV.transpose(0, 1).reshape(b, 1, -1))

    @staticmethod
    def _index_rope(idx, x_BND: torch.Tensor, rot_index: torch.Tensor) -> torch.Tensor:
        """`Indexer._rope_and_quantize` with the rotation (and Hadamard) as one matrix per sequence."""
        x_BND = rotate(x_BND, rot_index)
        return fp8_emulate(x_BND, min(128, idx.head_dim)) if idx.use_fp8 else x_BND

    def _index_queries(self, idx, x, qr, w_raw, rot_index):
        b = x.shape[0]
        q_BHD = self._index_rope(idx, idx.wq_b(qr).view(b, idx.n_heads, idx.head_dim), rot_index)
        q_BTHD = q_BHD[:, None]
        if w_raw:  # fp32 model: weights_proj ran inside the fused matmul
            w_BTH = w_raw[0]
        else:
            w_BTH = F.linear(x.float(), idx.weights_proj.weight.float())
        return q_BTHD, w_BTH * (idx.n_heads * idx.head_dim) ** -0.5

    def _forward(self, seq_ids: list[object], ids_BT: torch.Tensor, starts: list[int],
                 want_routing: bool = True) -> StepResult:  # fmt: skip
        cache, config, device = self.cache, self.config, self.model.device
        b, t = ids_BT.shape
        ends = [s + t for s in starts]
        span = max(ends)
        ids_BT = ids_BT.to(device)
        pos_BT = torch.tensor(starts, device=device)[:, None] + torch.arange(t, device=device)
        # Pool rows of every context position of each sequence, padded with row 0 (the causal mask
        # hides padded keys: their index exceeds every query position of that sequence).
        ctx_rows_BS = torch.zeros(b, span, dtype=torch.long, device=device)
        for i, (sid, end) in enumerate(zip(seq_ids, ends)):
            ctx_rows_BS[i, :end] = cache.rows(sid, 0, end)
        new_rows_BT = torch.stack([ctx_rows_BS[i, s : s + t] for i, s in enumerate(starts)])
        cos, sin = rope_cos_sin(config, pos_BT)
        h = self.model.model.embed_tokens(ids_BT)
        routing = []
        for block in self.model.model.layers:
            x = block.input_layernorm(h)
            h = h + self._attention(
                block.layer, block.self_attn, x, cos, sin, pos_BT, ctx_rows_BS, new_rows_BT
            )
            mlp_in = block.post_attention_layernorm(h)
            if isinstance(block.mlp, MoE):
                mlp_out, r = self.experts[block.layer](mlp_in)
                if want_routing:
                    routing.append(r.expert_ids.view(b, t, -1).to(torch.int16))
            else:
                mlp_out = block.mlp(mlp_in)
            h = h + mlp_out
        logits = self.model.lm_head(self.model.model.norm(h[:, -1])).float()
        return StepResult(logits, torch.stack(routing, dim=2) if routing else None)

    def _attention(self, layer, attn, x, cos, sin, pos_BT, ctx_rows_BS, new_rows_BT) -> torch.Tensor:
        cache, dtype = self.cache, x.dtype
        b, t, _ = x.shape
        q_nope, q_pe, qr = attn.query(x, cos, sin)
        c_kv, k_pe = attn.latent(x, cos, sin)
        k_index = attn.indexer.keys(x, cos, sin)
        cache.write(
            layer, new_rows_BT.flatten(), c_kv.flatten(0, 1), k_pe.flatten(0, 1), k_index.flatten(0, 1)
        )
        if self.attention == "dense":
            c_all, pe_all = cache.read_latent(layer, ctx_rows_BS, dtype)
            if t > 1:
                return attn.mha(q_nope, q_pe, c_all, pe_all, pos_BT)
            o_lat, _ = attend_latent(attn.absorb(q_nope), q_pe, c_all, pe_all, pos_BT, attn.scale)
            return attn.output_from_latent(o_lat)
        if ctx_rows_BS.shape[1] <= attn.indexer.topk:
            # Every sequence is within top-k: the selection is every causal key, i.e. dense
            # attention (SPEC: sequences no longer than k are exactly dense).
            c_all, pe_all = cache.read_latent(layer, ctx_rows_BS, dtype)
            if t > 1:
                return attn.mha(q_nope, q_pe, c_all, pe_all, pos_BT)
            o_lat, _ = attend_latent(attn.absorb(q_nope), q_pe, c_all, pe_all, pos_BT, attn.scale)
            return attn.output_from_latent(o_lat)
        keys_BSD = cache.read_index_keys(layer, ctx_rows_BS).to(k_index.dtype)
        q_index, w_index = attn.indexer.queries(x, qr, cos, sin)
        idx_BTK, _ = select_topk(q_index, w_index, keys_BSD, pos_BT, attn.indexer.topk)
        if t == 1:  # decode: read only the selected latent rows
            k = idx_BTK.shape[-1]
            sel_rows_BK = ctx_rows_BS.gather(1, idx_BTK[:, 0].clamp(min=0))
            c_sel, pe_sel = cache.read_latent(layer, sel_rows_BK, dtype)
            local_BTK = torch.where(idx_BTK >= 0, torch.arange(k, device=x.device), -1)
            o_lat, _ = attend_latent(attn.absorb(q_nope), q_pe, c_sel, pe_sel, pos_BT, attn.scale,
                                     indices_BTK=local_BTK, impl="gather")  # fmt: skip
        else:
            c_all, pe_all = cache.read_latent(layer, ctx_rows_BS, dtype)
            k, s = idx_BTK.shape[-1], ctx_rows_BS.shape[1]
            if sparse_kernel(k, c_all.shape[-1] + pe_all.shape[-1], attn.n_heads, s) == "masked":
                return attn.mha(q_nope, q_pe, c_all, pe_all, pos_BT, indices_BTK=idx_BTK)
            o_lat, _ = attend_latent(attn.absorb(q_nope), q_pe, c_all, pe_all, pos_BT, attn.scale,
                                     indices_BTK=idx_BTK, impl="gather")  # fmt: skip
        return attn.output_from_latent(o_lat)
