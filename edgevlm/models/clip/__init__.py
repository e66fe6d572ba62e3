"""CLIP vision encoder."""

from .config import ClipVisionConfig
from .vision import ClipVisionTower

__all__ = ["ClipVisionConfig", "ClipVisionTower"]
