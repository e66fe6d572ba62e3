"""An ``image_url`` of a chat message to an RGB uint8 array ``[H, W, 3]``, within the server's limits.

``data:image/...;base64,...`` URLs always; a local path (``/abs/path.png`` or ``file:///abs/path.png``)
only when the server was started with ``--allow-local-files``; ``http(s)://`` URLs never (the server
fetches nothing). The encoded size is checked before decoding, the pixel count from the header
before the pixels are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..processing.image import load_image
from .api_errors import ApiError, bad_request
from .config import ServeConfig


def _too_big(what: str, size: int, limit: int, param: str) -> ApiError:
    return ApiError(400, f"{what} of {size} bytes is larger than the server's limit of {limit} bytes per image",
                    "invalid_request_error", "image_too_large", param)


def _bytes_of(url: str, config: ServeConfig, param: str) -> bytes:
    if url.startswith("data:"):
        head, comma, payload = url.partition(",")
        if not comma or ";base64" not in head:
            raise bad_request("an image data: URL must be 'data:image/<type>;base64,<data>'", param, "invalid_image")
        if len(payload) > (config.max_image_bytes + 2) // 3 * 4 + 4:
            raise _too_big("the image", len(payload) * 3 // 4, config.max_image_bytes, param)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("the image data: URL is not valid base64", param, "invalid_image") from None
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise bad_request("this server fetches no URLs: send the image inline as a data: URL "
                          "(data:image/png;base64,...)", param, "invalid_image_url")
    if parsed.scheme not in ("", "file"):
        raise bad_request(f"image URL scheme {parsed.scheme!r} is not supported: send a data: URL", param,
                          "invalid_image_url")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
    if not config.allow_local_files:
        raise bad_request("local image files are turned off: send the image as a data: URL, or start the server "
                          "with --allow-local-files", param, "local_files_disabled")
    if not path.is_absolute():
        raise bad_request(f"{path}: a local image path must be absolute", param, "invalid_image_url")
    if not path.is_file():
        raise bad_request(f"{path}: no such image file", param, "invalid_image_url")
    size = path.stat().st_size
    if size > config.max_image_bytes:
        raise _too_big(str(path), size, config.max_image_bytes, param)
    return path.read_bytes()


def decode_image(url: str, config: ServeConfig, param: str) -> np.ndarray:
    """The picture at ``url`` as RGB uint8 ``[H, W, 3]``; ApiError 400 naming ``param`` when it is refused."""
    data = _bytes_of(url, config, param)
    if len(data) > config.max_image_bytes:
        raise _too_big("the image", len(data), config.max_image_bytes, param)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise bad_request("the image is not a picture this server can read (PNG, JPEG, GIF, BMP, WebP, ...)", param,
                          "invalid_image") from None
    if width * height > config.max_image_pixels:
        raise ApiError(400, f"the image of {width}x{height} pixels is larger than the server's limit of "
                            f"{config.max_image_pixels} pixels", "invalid_request_error", "image_too_large", param)
    try:
        return load_image(data)
    except InputError as e:
        raise bad_request(f"the image cannot be decoded: {e}", param, "invalid_image") from None
