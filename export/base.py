"""What every target exporter receives and returns, and the registry of targets."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from edgevlm import contract as C
from edgevlm.errors import InputError
from edgevlm.models import LoadedModel

from .graphs import cache_shape

# target name -> module under edgevlm.export.targets
TARGETS = {name: name for name in C.TARGETS}


class ToolchainMissing(Exception):
    """The packages a target needs are not installed."""


@dataclass
class ExportContext:
    reference: LoadedModel  # the quantized model, as read back from the bundle's weights
    bundle: Path
    chunk_size: int
    max_context: int
    manifest: dict
    score: bool = False  # also export the optional ``score`` method (teacher-forced log-probabilities)

    @property
    def image_size(self) -> int | None:
        """The side S of the encoder's square tiles (the manifest may record CLIP's crop as [h, w])."""
        pre = self.manifest.get(C.KEY_IMAGE_PREPROCESSING) or {}
        size = pre.get(C.IMAGE_SIZE)
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"the vision encoder takes square tiles; the processor crops to {size}")
            size = size[0]
        return None if size is None else int(size)

    @property
    def cache_shape(self) -> tuple[int, int, int, int]:
        return cache_shape(self.reference.model, self.max_context)

    @property
    def methods(self) -> list[str]:
        vision = self.reference.processor.supports_images
        methods = [m for m in C.METHODS if vision or m != C.METHOD_VISION_ENCODER]
        return methods + [C.METHOD_SCORE] if self.score else methods


@dataclass
class TargetResult:
    files: dict[str, str]  # method (or role) -> path relative to the bundle
    checks: dict = field(default_factory=dict)  # static checks done at export time
    note: str = ""


def target_module(name: str) -> ModuleType:
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return importlib.import_module(f"edgevlm.export.targets.{TARGETS[name]}")


def missing_toolchain(module: ModuleType) -> list[str]:
    return [pkg for pkg in getattr(module, "TOOLCHAIN", ()) if importlib.util.find_spec(pkg) is None]
