"""Config of the Llama-family text decoder (SmolLM2, Llama 2/3, MobileLLaMA, TinyStories)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..config import from_dict, require

ROPE_TYPES = ("default", "linear", "llama3", "yarn")
ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "relu")


@dataclass
class RopeConfig:
    """Rotary embedding parameters: the base and one of the scaling variants Llama models use.

    ``default``: plain RoPE; ``linear``: positions divided by ``factor``; ``llama3``: Llama 3.1's
    wavelength-dependent frequency scaling; ``yarn``: YaRN frequency blending with attention factor.
    """

    rope_type: str = "default"
    rope_theta: float = 10000.0
    factor: float = 1.0
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int | None = None
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        require(self.rope_type, "rope_type", ROPE_TYPES)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "RopeConfig":
        """Read transformers-5 ``rope_parameters`` or the older ``rope_theta`` + ``rope_scaling``."""
        params = hf.get("rope_parameters")
        if isinstance(params, dict) and "full_attention" in params and isinstance(params["full_attention"], dict):
            params = params["full_attention"]
        merged: dict[str, Any] = {"rope_theta": hf.get("rope_theta", 10000.0)}
        scaling = hf.get("rope_scaling")
        if isinstance(scaling, dict):
            merged.update(scaling)
        if isinstance(params, dict):
            merged.update(params)
        rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
        merged["rope_type"] = rope_type
        return from_dict(cls, merged)


@dataclass
class LlamaConfig:
    """Text decoder hyper-parameters, read from a Llama-style ``config.json`` / ``text_config``."""

    # defaults are transformers' LlamaConfig defaults, for keys a config.json leaves out
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int = 32000
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    rope: RopeConfig = field(default_factory=RopeConfig)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if isinstance(self.rope, dict):
            self.rope = from_dict(RopeConfig, self.rope)
        require(self.hidden_act, "hidden_act", ACTIVATIONS)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, list) else [self.eos_token_id]

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> "LlamaConfig":
        return from_dict(cls, hf, rope=RopeConfig.from_hf(hf), **overrides)

    def to_hf(self) -> dict[str, Any]:
        """A transformers ``LlamaConfig`` dict (rope in both the transformers-5 and the older keys)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rope"}
        rope = {k: v for k, v in asdict(self.rope).items() if v is not None}
        if self.rope.rope_type == "default":
            rope = {"rope_type": "default", "rope_theta": self.rope.rope_theta}
        else:
            d["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        return {"model_type": "llama", **d, "rope_theta": self.rope.rope_theta, "rope_parameters": rope}


# Named presets: real model shapes and tiny test sizes.
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, rms_norm_eps=1e-5, max_position_embeddings=8192,
        tie_word_embeddings=True, rope=dict(rope_theta=100000.0),
    ),
    "mobilellama-1.4b": dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=16, vocab_size=32000, rms_norm_eps=1e-6, max_position_embeddings=2048,
    ),
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
    ),
}


def preset(name: str, **overrides: Any) -> LlamaConfig:
    """A named config preset (``smollm2-135m``, ``mobilellama-1.4b``, ``tiny``)."""
    require(name, "llama preset", tuple(PRESETS))
    return LlamaConfig(**{**PRESETS[name], **overrides})
