"""The pre-norm ViT encoder layer shared by the SigLIP and CLIP vision towers.

Names follow both checkpoints (``layer_norm1``, ``self_attn.{q,k,v,out}_proj``, ``layer_norm2``,
``mlp.fc1/fc2``), so each tower only adds its own embeddings and norms.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import from_dict, require

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
    "relu": F.relu,
}


@dataclass
class ViTConfig:
    """Hyper-parameters of a vision tower (SigLIP or CLIP), read from ``vision_config``.

    ``feature_layer`` picks the hidden state the projector reads: None for the last layer followed
    by the post-layernorm (Idefics3 / SmolVLM), or an index into the hidden states (0 = embeddings,
    i = after layer i, negative from the end; LLaVA and MobileVLM use -2). Layers past the one
    read are not built.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    feature_layer: int | None = None

    def __post_init__(self) -> None:
        require(self.hidden_act, "vision hidden_act", tuple(ACTIVATIONS))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"vision hidden_size {self.hidden_size} not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.feature_layer is not None and not -self.num_hidden_layers - 1 <= self.feature_layer <= self.num_hidden_layers:
            raise ValueError(f"feature layer {self.feature_layer} out of range for {self.num_hidden_layers} layers")

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> "ViTConfig":
        return from_dict(cls, hf, **overrides)

    def to_hf(self, model_type: str) -> dict[str, Any]:
        """A transformers vision config dict (the feature layer belongs to the parent config)."""
        return {"model_type": model_type, **{k: v for k, v in dataclasses.asdict(self).items() if k != "feature_layer"}}

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.patches_per_side**2

    @property
    def layers_used(self) -> int:
        """Encoder layers that run: all of them, or those up to the feature layer."""
        if self.feature_layer is None:
            return self.num_hidden_layers
        return self.feature_layer % (self.num_hidden_layers + 1)


class ViTAttention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, P, D] -> [N, P, D]
        n, p, d = x.shape
        q, k, v = (proj(x).view(n, p, self.num_heads, self.head_dim).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(n, p, d))


class ViTMLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTLayer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = ViTAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = ViTMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ViTEncoder(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.layers = nn.ModuleList(ViTLayer(cfg) for _ in range(cfg.layers_used))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def unused_layer_patterns(cfg: ViTConfig) -> tuple[str, ...]:
    """Key patterns (relative to the tower) of encoder layers past the feature layer: not built, not loaded."""
    unused = range(cfg.layers_used, cfg.num_hidden_layers)
    if not unused:
        return ()
    return (rf"encoder\.layers\.({'|'.join(str(i) for i in unused)})\.",)


def prefixed(prefix: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Anchor tower-relative key patterns under a checkpoint prefix."""
    return tuple("^" + re.escape(prefix) + p for p in patterns)
