"""Image preprocessing primitives, numerically identical to the Hugging Face PIL image processors.

Images travel as RGB ``uint8`` arrays ``[H, W, 3]`` until the last step, which rescales to
``[0, 1]``, normalizes with the model's mean and std and returns float32 ``[3, H, W]``. Resizing
uses Pillow's filters (the HF processors do the same), so C++ ports can match it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

ImageLike = Union[str, Path, Image.Image, np.ndarray, bytes]

# HF ``PILImageResampling`` values as stored in preprocessor_config.json -> Pillow filter.
RESAMPLE_BY_ID = {0: Image.Resampling.NEAREST, 1: Image.Resampling.LANCZOS, 2: Image.Resampling.BILINEAR,
                  3: Image.Resampling.BICUBIC, 4: Image.Resampling.BOX, 5: Image.Resampling.HAMMING}
RESAMPLE_NAMES = {Image.Resampling.NEAREST: "nearest", Image.Resampling.LANCZOS: "lanczos",
                  Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic",
                  Image.Resampling.BOX: "box", Image.Resampling.HAMMING: "hamming"}

MAX_PIXELS = 100_000_000  # refuse decompression bombs


def resample_filter(value: int | str | None, default: Image.Resampling) -> Image.Resampling:
    """A Pillow filter from an HF config value (int id or name)."""
    if value is None:
        return default
    if isinstance(value, str):
        by_name = {v: k for k, v in RESAMPLE_NAMES.items()}
        if value.lower() not in by_name:
            raise InputError(f"unknown resample filter {value!r}; known: {', '.join(by_name)}")
        return by_name[value.lower()]
    if value not in RESAMPLE_BY_ID:
        raise InputError(f"unknown resample filter id {value}; known: {sorted(RESAMPLE_BY_ID)}")
    return RESAMPLE_BY_ID[value]


def load_image(image: ImageLike) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` from a path, bytes, PIL image or array; transparency over white.

    Arrays may be ``[H, W]`` (gray), ``[H, W, 3]`` or ``[H, W, 4]`` uint8. Anything else, or a file
    that is not a readable image, raises :class:`InputError` naming the problem.
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    name = "image bytes"
    if isinstance(image, (str, Path)):
        name = str(image)
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{name}: image file not found")
        data = path.read_bytes()
    elif isinstance(image, bytes):
        data = image
    elif isinstance(image, Image.Image):
        return _pil_to_rgb(image, "PIL image")
    else:
        raise InputError(f"unsupported image type {type(image).__name__}: pass a path, bytes, PIL image or uint8 array")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{name}: image of {im.width}x{im.height} pixels is too large")
            im.load()
            return _pil_to_rgb(im, name)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, InputError):
            raise
        if isinstance(e, UnidentifiedImageError):
            reason = "not a format Pillow can read, or a corrupt header"  # Pillow's own text names a BytesIO
        else:
            reason = str(e)
        raise InputError(f"{name}: not a readable image ({reason})") from e


def _pil_to_rgb(im: Image.Image, name: str) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise InputError(f"{name}: empty image")
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(im.convert("RGB"))


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        raise InputError(f"image array must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"image array must be [H, W], [H, W, 3] or [H, W, 4], got shape {list(a.shape)}")
    if a.shape[-1] == 4:
        return _pil_to_rgb(Image.fromarray(a, "RGBA"), "RGBA array")
    return np.ascontiguousarray(a)


def resize(image: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    """Resize RGB uint8 ``[H, W, 3]`` to ``[height, width, 3]`` with a Pillow filter."""
    return np.array(Image.fromarray(image).resize((width, height), resample=resample))


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Center crop ``[H, W, C]``; zero-pads (centered) where the image is smaller than the crop."""
    h, w = image.shape[:2]
    if h < height or w < width:
        padded = np.zeros((max(h, height), max(w, width), image.shape[2]), dtype=image.dtype)
        top, left = (padded.shape[0] - h + 1) // 2, (padded.shape[1] - w + 1) // 2
        padded[top:top + h, left:left + w] = image
        image, h, w = padded, padded.shape[0], padded.shape[1]
    top, left = (h - height) // 2, (w - width) // 2
    return image[top:top + height, left:left + width]


def expand_to_square(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """Pad ``[H, W, 3]`` to a centered square of side max(H, W) filled with ``fill``."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = np.array(fill, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def normalize(image: np.ndarray, mean: list[float], std: list[float], rescale: float = 1 / 255) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]``: ``(x * rescale - mean) / std``."""
    x = (image.astype(np.float64) * rescale).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
