"""Paged cache of MLA latents and lightning-indexer keys, shared by many sequences.

Per token and layer the cache holds exactly what DSA reads at decode time (SPEC section 1):
- the latent entry `c_kv | k_pe` (C + dr values; bf16 by default: 1,152 bytes at the official shape),
- the indexer key k_I (D_I values) in one of four storage modes:
    "fp8"  e4m3 codes + one fp32 power-of-two ("ue8m0") scale per block of min(128, D_I) values
           (128 + 4 = 132 bytes at the official shape; the format of the official inference code),
    "int8" symmetric int8 codes + one fp32 scale per token (amax / 127; also 132 bytes),
    "bf16", "fp32" plain copies (the fp32 latent + fp32 keys mode reproduces the fp32 model exactly).

Storage is paged: every tensor is a flat pool of `n_pages * page_size` rows per layer, and each
sequence owns a list of pages (its page table). Token position p of a sequence lives at row
`table[p // page_size] * page_size + p % page_size`. Attention reads through row indices, so a
sequence's pages need not be contiguous, and freeing a sequence returns its pages at once.

The cache is a plain data object (no nn.Module buffers); it is not thread-safe on its own: the
scheduler serialises access.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv32.config import ModelConfig
from dsv32.model.indexer import fp8_ue8m0_dequantize, fp8_ue8m0_quantize

INDEX_MODES = ("fp8", "int8", "bf16", "fp32")
LATENT_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class CacheFullError(RuntimeError):
    """Not enough free pages for a request."""


@dataclass(frozen=True)
class CacheSpec:
    """How a cache stores its entries. `compact()` is the serving default, `exact()` the test mode."""

    latent: str = "bf16"  # "bf16" | "fp32"
    index: str = "fp8"  # one of INDEX_MODES

    def __post_init__(self) -> None:
        if self.latent not in LATENT_DTYPES:
            raise ValueError(
                f"cache latent dtype must be one of {sorted(LATENT_DTYPES)}, got {self.latent!r}"
            )
        if self.index not in INDEX_MODES:
            raise ValueError(f"cache index mode must be one of {INDEX_MODES}, got {self.index!r}")

    @classmethod
    def compact(cls) -> CacheSpec:
        return cls("bf16", "fp8")

    @classmethod
    def exact(cls) -> CacheSpec:
        return cls("fp32", "fp32")


class PagedCache:
    """Latent + indexer-key pools for all layers, with page tables per sequence id."""

    def __init__(
        self,
        config: ModelConfig,
        n_pages: int,
        page_size: int = 64,
        spec: CacheSpec | None = None,
        device: str | torch.device = "cpu",
    ):
        if n_pages < 1 or page_size < 1:
            raise ValueError(f"n_pages and page_size must be >= 1, got {n_pages} and {page_size}")
        self.config, self.spec = config, spec or CacheSpec.compact()
        self.n_pages, self.page_size, self.device = n_pages, page_size, torch.device(device)
        n_layers, rows = config.num_hidden_layers, n_pages * page_size
        self.kv_rank, self.rope_dim, self.index_dim = (
            config.kv_lora_rank,
            config.qk_rope_head_dim,
            config.index_head_dim,
        )
        self.fp8_block = min(128, self.index_dim)
        latent_dtype = LATENT_DTYPES[self.spec.latent]
        self.latent = torch.zeros(n_layers, rows, config.latent_dim, dtype=latent_dtype, device=self.device)
        mode = self.spec.index
        code_dtype = {"fp8": torch.uint8, "int8": torch.int8, "bf16": torch.bfloat16, "fp32": torch.float32}[
            mode
        ]
        self.index_codes = torch.zeros(n_layers, rows, self.index_dim, dtype=code_dtype, device=self.device)
        n_scales = {"fp8": self.index_dim // self.fp8_block, "int8": 1}.get(mode, 0)
        self.index_scales = (
            torch.zeros(n_layers, rows, n_scales, dtype=torch.float32, device=self.device)
            if n_scales
            else None
        )
        self._free: list[int] = list(range(n_pages - 1, -1, -1))  # pop() hands out page 0 first
        self._tables: dict[object, list[int]] = {}
        self._row_cache: dict[object, torch.Tensor] = {}  # seq id -> rows of every reserved position

    # ---- accounting -------------------------------------------------------------------------
    def bytes_per_token(self) -> int:
        """Bytes one token occupies across all layers, from the actual storage tensors."""
        tensors = [self.latent, self.index_codes] + (
            [self.index_scales] if self.index_scales is not None else []
        )
        rows = self.n_pages * self.page_size
        return sum(t.numel() * t.element_size() for t in tensors) // rows

    @property
    def free_pages(self) -> int:
        return len(self._free)

    def pages_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.page_size)

    # ---- page tables ------------------------------------------------------------------------
    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._tables

    def capacity(self, seq_id: object) -> int:
        """Token positions the sequence can hold without allocating more pages."""
        return len(self._tables.get(seq_id, ())) * self.page_size

    def reserve(self, seq_id: object, n_tokens: int) -> None:
        """Make sure `seq_id` can hold `n_tokens` positions (allocating pages); CacheFullError if not."""
        table = self._tables.setdefault(seq_id, [])
        need = self.pages_for(n_tokens) - len(table)
        if need > len(self._free):
            if not table:
                del self._tables[seq_id]
            raise CacheFullError(
                f"sequence {seq_id!r} needs {need} more pages of {self.page_size} tokens, "
                f"{len(self._free)} free"
            )
        for _ in range(max(0, need)):
            table.append(self._free.pop())
        if need > 0:
            self._row_cache.pop(seq_id, None)

    def free(self, seq_id: object) -> None:
        """Return all pages of `seq_id` to the pool (no-op for an unknown id)."""
        self._row_cache.pop(seq_id, None)
        for page in reversed(self._tables.pop(seq_id, [])):
            self._free.append(page)

    def rows(self, seq_id: object, start: int, end: int) -> torch.Tensor:
        """Flat pool rows of positions [start, end) of `seq_id` (int64 [end - start])."""
        if end > self.capacity(seq_id):
            raise IndexError(
                f"positions up to {end} exceed the {self.capacity(seq_id)} reserved for {seq_id!r}"
            )
        pos = torch.arange(start, end, device=self.device)
        table = torch.tensor(self._tables[seq_id], dtype=torch.long, device=self.device)
        return table[pos // self.page_size] * self.page_size + pos % self.page_size

    def seq_rows(self, seq_id: object, end: int) -> torch.Tensor:
        """`rows(seq_id, 0, end)` from a per-sequence table kept until its pages change."""
        rows = self._row_cache.get(seq_id)
        if rows is None:
            rows = self._row_cache[seq_id] = self.rows(seq_id, 0, self.capacity(seq_id))
        if end > rows.shape[0]:
            raise IndexError(f"positions up to {end} exceed the {rows.shape[0]} reserved for {seq_id!r}")
        return rows[:end]

    # ---- writes and reads --------------------------------------------------------------------
    def write(self, layer: int, rows_N: torch.Tensor, c_kv_NC: torch.Tensor, k_pe_NR: torch.Tensor,
              k_index_ND: torch.Tensor) -> None:  # fmt: skip
        """Store the entries of N tokens at pool rows `rows_N` of `layer`."""
        self.write_latent(layer, rows_N, torch.cat((c_kv_NC, k_pe_NR), dim=-1))
        self.write_index_keys([layer], rows_N, k_index_ND[None])

    def write_latent(self, layer: int, rows_N: torch.Tensor, latent_NL: torch.Tensor) -> None:
        """Store ready-made latent entries `c_kv | k_pe` of N tokens at pool rows `rows_N` of `layer`."""
        self.latent[layer, rows_N] = latent_NL.to(self.latent.dtype)

    def write_index_keys(self, layers: list[int], rows_N: torch.Tensor, k_index_LND: torch.Tensor) -> None:
        """Store the indexer keys of the same N tokens in several layers at once ([L, N, D_I])."""
        lay = torch.tensor(layers, device=self.device)[:, None]
        mode = self.spec.index
        if mode == "fp8":
            codes, scales = fp8_ue8m0_quantize(k_index_LND, self.fp8_block)
            self.index_codes[lay, rows_N] = codes.view(torch.uint8)
            self.index_scales[lay, rows_N] = scales
        elif mode == "int8":
            x = k_index_LND.float()
            scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127.0
            self.index_codes[lay, rows_N] = torch.round(x / scale).clamp(-127, 127).to(torch.int8)
            self.index_scales[lay, rows_N] = scale
        else:
            self.index_codes[lay, rows_N] = k_index_LND.to(self.index_codes.dtype)

    def read_latent(
        self, layer: int, rows: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_kv [..., C], k_pe [..., dr]) at pool rows of any shape, cast to `dtype`."""
        lat = self.latent[layer][rows].to(dtype)
        return lat[..., : self.kv_rank], lat[..., self.kv_rank :]

    def read_index_keys(self, layer: int, rows: torch.Tensor) -> torch.Tensor:
        """Dequantised indexer keys [..., D_I] (fp32) at pool rows of any shape."""
        codes = self.index_codes[layer][rows]
        mode = self.spec.index
        if mode == "fp8":
            return fp8_ue8m0_dequantize(codes.view(torch.float8_e4m3fn), self.index_scales[layer][rows])
        if mode == "int8":
            return codes.float() * self.index_scales[layer][rows]
        return codes.float()
