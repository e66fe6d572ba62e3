"""SigLIP vision encoder."""

from .config import SiglipVisionConfig
from .vision import SiglipVisionTower

__all__ = ["SiglipVisionConfig", "SiglipVisionTower"]
