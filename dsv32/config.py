"""ModelConfig: the official DeepSeek-V3.2 `config.json`, as a validated dataclass, plus presets.

Field names are the official Hugging Face keys, so a `config.json` from a real checkpoint loads
as is and is written back with every key it had (keys this project does not use are kept in
`extra`). Three keys are dsv32's own. Two say how the lightning indexer is emulated:
`index_hadamard` (rotate q/k by a normalised Hadamard matrix) and `index_fp8` (FP8 e4m3 "ue8m0"
quantisation of q/k). The official inference code does both; they are off in the small presets,
which train the indexer in full precision. The third, `embedding_initializer_range`, only concerns
training from scratch: the token embedding's init std (null: `initializer_range`, as in the official
code); a larger one lets small models form copying circuits sooner (README, induction probes).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsv32.data.io import atomic_write_text  # noqa: F401  (re-exported: the one atomic writer)

# Keys that are part of the official config but describe nothing the model needs to be built.
_PASSTHROUGH_DEFAULTS: dict[str, Any] = {
    "model_type": "deepseek_v32",
    "architectures": ["DeepseekV32ForCausalLM"],
}


@dataclass
class ModelConfig:
    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 61
    first_k_dense_replace: int = 3
    num_attention_heads: int = 128
    num_key_value_heads: int = 128
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    norm_topk_prob: bool = True
    moe_layer_freq: int = 1
    rms_norm_eps: float = 1e-6
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 2048
    max_position_embeddings: int = 163840
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = field(
        default_factory=lambda: {
            "type": "yarn",
            "factor": 40,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        }
    )
    num_nextn_predict_layers: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 1
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    # dsv32's own keys: how the indexer is emulated (see module docstring).
    index_hadamard: bool = True
    index_fp8: bool = True
    embedding_initializer_range: float | None = None
    # Official keys this project does not interpret, kept so a round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=lambda: dict(_PASSTHROUGH_DEFAULTS))

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Width of one cached latent entry: c_kv | k_pe."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def yarn(self) -> dict[str, Any] | None:
        rs = self.rope_scaling
        if rs and rs.get("type", rs.get("rope_type")) == "yarn":
            return rs
        return None

    @property
    def softmax_scale(self) -> float:
        """qk_head_dim^-0.5, times mscale^2 when YaRN is on (mscale = 0.1 mscale_all_dim ln(factor) + 1)."""
        scale = self.qk_head_dim**-0.5
        yarn = self.yarn
        if yarn and yarn.get("mscale_all_dim") and float(yarn["factor"]) > 1:
            mscale = 0.1 * float(yarn["mscale_all_dim"]) * math.log(float(yarn["factor"])) + 1.0
            scale *= mscale * mscale
        return scale

    def is_moe_layer(self, layer: int) -> bool:
        return (
            self.n_routed_experts > 0
            and layer >= self.first_k_dense_replace
            and layer % max(self.moe_layer_freq, 1) == 0
        )

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.num_hidden_layers) if self.is_moe_layer(i)]

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"invalid model config: {message}")

        for name in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
            "index_n_heads", "index_head_dim", "max_position_embeddings",
        ):  # fmt: skip
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{name} must be a positive integer, got {value!r}",
            )
        need(
            self.index_topk >= 1 if isinstance(self.index_topk, int) else False,
            f"index_topk must be an integer >= 1, got {self.index_topk!r}",
        )
        need(
            self.embedding_initializer_range is None or self.embedding_initializer_range > 0,
            f"embedding_initializer_range must be > 0 or null, got {self.embedding_initializer_range!r}",
        )
        need(
            self.qk_rope_head_dim % 2 == 0,
            f"qk_rope_head_dim must be even for RoPE, got {self.qk_rope_head_dim}",
        )
        need(
            self.index_head_dim >= self.qk_rope_head_dim,
            f"index_head_dim ({self.index_head_dim}) must be >= qk_rope_head_dim ({self.qk_rope_head_dim}): "
            "the indexer applies RoPE to its first qk_rope_head_dim dims",
        )
        need(
            0 <= self.first_k_dense_replace <= self.num_hidden_layers,
            f"first_k_dense_replace must be in [0, num_hidden_layers={self.num_hidden_layers}], "
            f"got {self.first_k_dense_replace}",
        )
        if self.index_hadamard:
            d = self.index_head_dim
            need(
                d & (d - 1) == 0, f"index_head_dim must be a power of two for the Hadamard rotation, got {d}"
            )
        if self.n_routed_experts > 0:
            need(self.n_group >= 1, f"n_group must be >= 1, got {self.n_group}")
            need(
                self.n_routed_experts % self.n_group == 0,
                f"n_routed_experts ({self.n_routed_experts}) must be divisible by n_group ({self.n_group})",
            )
            need(
                1 <= self.topk_group <= self.n_group,
                f"topk_group must be in [1, n_group={self.n_group}], got {self.topk_group}",
            )
            per_group = self.n_routed_experts // self.n_group
            need(
                per_group >= 2 or self.n_group == 1,
                f"each expert group needs >= 2 experts for the top-2 group score, got {per_group}",
            )
            need(
                1 <= self.num_experts_per_tok <= self.topk_group * per_group,
                f"num_experts_per_tok ({self.num_experts_per_tok}) must be in "
                f"[1, topk_group x experts per group = {self.topk_group * per_group}]",
            )
            need(self.moe_intermediate_size >= 1, "moe_intermediate_size must be >= 1")
        need(self.scoring_func == "sigmoid", f"scoring_func must be 'sigmoid', got {self.scoring_func!r}")
        need(self.topk_method == "noaux_tc", f"topk_method must be 'noaux_tc', got {self.topk_method!r}")
        need(self.hidden_act == "silu", f"hidden_act must be 'silu', got {self.hidden_act!r}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
            need(kind == "yarn", f"rope_scaling type must be 'yarn' (or rope_scaling null), got {kind!r}")
            for key in ("factor", "original_max_position_embeddings"):
                need(key in self.rope_scaling, f"rope_scaling needs {key!r}")
            need(
                float(self.rope_scaling["factor"]) >= 1.0,
                f"rope_scaling factor must be >= 1, got {self.rope_scaling['factor']}",
            )

    # ---- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **known}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        if "rope_scaling" not in data and isinstance(data.get("rope_parameters"), dict):
            # transformers v5 writes `rope_parameters`; read it as the official `rope_scaling`.
            params = dict(data["rope_parameters"])
            known.setdefault("rope_theta", params.pop("rope_theta", 10000.0))
            known["rope_scaling"] = params if params.get("rope_type", params.get("type")) == "yarn" else None
        if isinstance(known.get("eos_token_id"), list):
            extra["eos_token_id_list"] = known["eos_token_id"]
            known["eos_token_id"] = known["eos_token_id"][0]
        return cls(**known, extra={**_PASSTHROUGH_DEFAULTS, **extra})

    def to_json(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"model config not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        try:
            return cls.from_dict(data)
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from err

    def replace(self, **changes: Any) -> ModelConfig:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"invalid model config: {unknown} are not ModelConfig fields")
        return dataclasses.replace(self, **changes)


def _tiny() -> ModelConfig:
    # ~1.3M parameters: 1 dense + 2 MoE layers, 8 experts in 4 groups, indexer on (top-k 16).
    return ModelConfig(
        vocab_size=512, hidden_size=64, intermediate_size=160, moe_intermediate_size=32,
        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
        index_n_heads=4, index_head_dim=16, index_topk=16, max_position_embeddings=4096,
        rope_scaling={"type": "yarn", "factor": 4, "original_max_position_embeddings": 256,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        num_nextn_predict_layers=0, index_hadamard=False, index_fp8=False,
    )  # fmt: skip


def _small() -> ModelConfig:
    # ~25M parameters (8K vocabulary): CPU-trainable at context 2048.
    return ModelConfig(
        vocab_size=8192, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
        num_hidden_layers=6, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
        index_n_heads=4, index_head_dim=32, index_topk=256, max_position_embeddings=8192,
        rope_scaling={"type": "yarn", "factor": 4, "original_max_position_embeddings": 2048,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        num_nextn_predict_layers=0, index_hadamard=False, index_fp8=False,
    )  # fmt: skip


PRESETS = {"tiny": _tiny, "small": _small, "deepseek-v3.2": ModelConfig}


def preset(name: str) -> ModelConfig:
    """A fresh config for a named preset: `tiny`, `small` or `deepseek-v3.2` (the official numbers)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()
