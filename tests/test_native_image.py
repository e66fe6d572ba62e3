"""The C++ image preprocessing (runtimes/core/image.*, resample.*, image_file.*) against the Python
processors, through runtimes/tests/driver_image.cpp.

Pixels are compared in [0, 1] pixel units: the normalized difference times std. The Python side
decodes the photos (PIL) and the C++ side gets the same RGB bytes, so only the preprocessing is
compared; the C++ decoding of the photos is compared with PIL's separately (and every other format
variant in tests/test_native_codecs.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor, Idefics3ImageProcessor

from edgevlm.models.clip.processing import ClipImageProcessor
from edgevlm.models.smolvlm.processing import SmolVLMProcessor
from edgevlm.processing.image import load_image
from edgevlm.processing.processor import read_image_processor_config

ROOT = Path(__file__).resolve().parents[1]
SHAPES_VLM = ROOT / "edgevlm" / "zoo" / "shapes-vlm"
TOL = 1 / 255 + 1e-6
FILTERS = ["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]


@pytest.fixture(scope="module")
def driver(native_build) -> Path:
    return native_build / "driver_image"


def run_driver(driver: Path, *args) -> tuple[int, dict]:
    proc = subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"driver printed nothing (rc {proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(lines[-1])


def smolvlm_proc(image_config: dict, tile: int) -> SmolVLMProcessor:
    return SmolVLMProcessor(None, None, image_config, tokens_per_tile=(tile // 8) ** 2 // 4, tile_size=tile)


def idefics3_params(proc: SmolVLMProcessor) -> dict:
    """What export/bundle.py image_preprocessing() records for SmolVLM (called on a stand-in)."""
    from edgevlm.export.bundle import image_preprocessing

    loaded = SimpleNamespace(processor=proc, family="smolvlm", model=SimpleNamespace(tokens_per_tile=proc.tokens_per_tile))
    return image_preprocessing(loaded)


def clip_params(proc: ClipImageProcessor, kind: str) -> dict:
    """What export/bundle.py image_preprocessing() records for LLaVA / MobileVLM (on a stand-in)."""
    from edgevlm.export.bundle import image_preprocessing

    family = {"clip": "llava", "pad_square": "mobilevlm"}[kind]
    loaded = SimpleNamespace(processor=SimpleNamespace(supports_images=True, images=proc), family=family,
                             model=SimpleNamespace(tokens_per_tile=4))
    params = image_preprocessing(loaded)
    assert params["kind"] == kind
    return params


def processors() -> dict[str, tuple[callable, dict, list[float]]]:
    """name -> (python preprocess returning (pixels, rows, cols), C++ params, std)."""
    out = {}
    shapes = smolvlm_proc(read_image_processor_config(SHAPES_VLM), 128)
    tiny_cfg = Idefics3ImageProcessor(size={"longest_edge": 192}, max_image_size={"longest_edge": 64}).to_dict()
    tiny = smolvlm_proc(tiny_cfg, 64)  # tests/tiny_models.make_smolvlm's processor
    tiny_nosplit = smolvlm_proc({**tiny_cfg, "do_image_splitting": False}, 64)
    for name, p in (("idefics3-shapes-vlm", shapes), ("idefics3-tiny-split", tiny), ("idefics3-tiny-nosplit", tiny_nosplit)):
        out[name] = (lambda im, p=p: (lambda t: (t.pixel_values, t.rows, t.cols))(p.preprocess_image(im)),
                     idefics3_params(p), p.std)
    llava = ClipImageProcessor(CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).to_dict(), 56)
    clip336 = ClipImageProcessor(CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).to_dict(), 336)
    pad = ClipImageProcessor(CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).to_dict(), 48, pad_to_square=True)
    pad336 = ClipImageProcessor(CLIPImageProcessor().to_dict() | {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}, 336, pad_to_square=True)
    for name, p, kind in (("clip-56", llava, "clip"), ("clip-336", clip336, "clip"), ("pad_square-48", pad, "pad_square"),
                          ("pad_square-336", pad336, "pad_square")):
        out[name] = (lambda im, p=p: (p(im), 0, 0), clip_params(p, kind), p.std)
    return out


PROCESSORS = processors()


def cpp_preprocess(driver: Path, tmp: Path, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
    h, w = rgb.shape[:2]
    (tmp / "in.rgb").write_bytes(np.ascontiguousarray(rgb).tobytes())
    (tmp / "params.json").write_text(json.dumps(params))
    rc, info = run_driver(driver, "preprocess", tmp / "params.json", f"raw:{w}:{h}:{tmp / 'in.rgb'}", tmp / "out.f32")
    assert rc == 0, info
    pixels = np.fromfile(tmp / "out.f32", dtype=np.float32).reshape(info["num_tiles"], 3, info["height"], info["width"])
    return pixels, info


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_preprocessing_matches_python_on_photos(driver, images, tmp_path, name):
    python, params, std = PROCESSORS[name]
    worst = {}
    for path in images:
        rgb = load_image(path)
        ref, rows, cols = python(rgb)
        got, info = cpp_preprocess(driver, tmp_path, rgb, params)
        assert (info["rows"], info["cols"]) == (rows, cols), path.name
        assert info["grid"] == [rows, cols], path.name
        assert got.shape == ref.shape, path.name
        diff = np.abs(got - ref) * np.asarray(std, dtype=np.float32)[None, :, None, None]
        worst[path.name] = float(diff.max())
        assert diff.max() <= TOL, (path.name, float(diff.max()) * 255)
    print(name, "max |diff| in pixel units:", {k: round(v * 255, 4) for k, v in worst.items()}, "/255")


@pytest.mark.parametrize("size", [(1, 1), (3, 500), (500, 3), (64, 64), (65, 63), (191, 193), (1000, 17)])
def test_odd_sizes_match_python(driver, tmp_path, size):
    rng = np.random.default_rng(sum(size))
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for name, (python, params, std) in PROCESSORS.items():
        ref, rows, cols = python(rgb)
        got, info = cpp_preprocess(driver, tmp_path, rgb, params)
        assert (info["rows"], info["cols"]) == (rows, cols), name
        diff = np.abs(got - ref) * np.asarray(std, dtype=np.float32)[None, :, None, None]
        assert diff.max() <= TOL, (name, size, float(diff.max()) * 255)


def test_resize_is_bit_exact_with_pillow(driver, tmp_path):
    """Every filter, down- and upscaling, both pass orders (Pillow 13 reduces tall images vertically first)."""
    rng = np.random.default_rng(0)
    sizes = [((37, 53), (11, 9)), ((53, 37), (200, 7)), ((40, 100), (30, 79)), ((40, 100), (30, 78)),
             ((100, 40), (7, 39)), ((120, 286), (74, 166)), ((244, 173), (89, 16)), ((13, 7), (13, 19)),
             ((29, 31), (60, 31)), ((2, 300), (1, 1))]
    for (w, h), (ow, oh) in sizes:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        (tmp_path / "in.rgb").write_bytes(rgb.tobytes())
        for f in FILTERS:
            rc, info = run_driver(driver, "resize", f"raw:{w}:{h}:{tmp_path / 'in.rgb'}", ow, oh, f, tmp_path / "o.rgb")
            assert rc == 0, info
            got = np.fromfile(tmp_path / "o.rgb", dtype=np.uint8).reshape(oh, ow, 3)
            ref = np.array(Image.fromarray(rgb).resize((ow, oh), resample=getattr(Image.Resampling, f.upper())))
            assert np.array_equal(got, ref), (f, (w, h), (ow, oh), int(np.abs(got.astype(int) - ref).max()))


def test_photo_decoding_equals_pil(driver, images, tmp_path):
    """The runtime's own decoders give Pillow's pixels exactly: JPEG (libjpeg-turbo's islow IDCT,
    fancy upsampling and color tables) and BMP."""
    assert {p.suffix for p in images} == {".jpg", ".bmp"}
    for path in images:
        rc, info = run_driver(driver, "decode", path, tmp_path / "d.rgb")
        assert rc == 0, info
        got = np.fromfile(tmp_path / "d.rgb", dtype=np.uint8).reshape(info["height"], info["width"], 3).astype(int)
        ref = load_image(path).astype(int)
        assert got.shape == ref.shape, path.name
        assert np.array_equal(got, ref), (path.name, int(np.abs(got - ref).max()))


def test_png_with_alpha_and_gray_decode_like_python(driver, tmp_path):
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (23, 31, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (9, 14), dtype=np.uint8)
    for name, im in (("rgba.png", Image.fromarray(rgba, "RGBA")), ("gray.png", Image.fromarray(gray, "L")),
                     ("la.png", Image.fromarray(rgba[..., :2], "LA"))):
        im.save(tmp_path / name)
        rc, info = run_driver(driver, "decode", tmp_path / name, tmp_path / "d.rgb")
        assert rc == 0, info
        got = np.fromfile(tmp_path / "d.rgb", dtype=np.uint8).reshape(info["height"], info["width"], 3)
        assert np.array_equal(got, load_image(tmp_path / name)), name


def test_bad_inputs_are_errors(driver, tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps(PROCESSORS["clip-56"][1]))
    (tmp_path / "in.rgb").write_bytes(bytes(30))
    raw = lambda w, h: f"raw:{w}:{h}:{tmp_path / 'in.rgb'}"  # noqa: E731
    cases = [
        (raw(5, 3), 1, "needs 45 bytes, got 30"),
        (raw(0, 10), 1, "must be positive"),
        (raw(-4, 10), 1, "must be positive"),
        (raw(70000, 1), 1, "too large"),
        (raw(20000, 20000), 1, "too large"),
        (tmp_path / "missing.jpg", 2, "not found"),
    ]
    (tmp_path / "notimage.jpg").write_bytes(b"definitely not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("RGB", (40, 30)).save(tmp_path / "t.jpg")
    (tmp_path / "trunc.jpg").write_bytes((tmp_path / "t.jpg").read_bytes()[:40])
    cases += [(tmp_path / "notimage.jpg", 1, "not a readable image"), (tmp_path / "empty.png", 1, "empty"),
              (tmp_path / "trunc.jpg", 1, "trunc.jpg")]
    for spec, code, text in cases:
        rc, info = run_driver(driver, "preprocess", params, spec, tmp_path / "o.f32")
        assert rc == 2 and info["error"] == code and text in info["message"], (spec, info)


@pytest.mark.parametrize("params, code, text", [
    ({"kind": "idefics3"}, 1, "missing key 'image_size'"),
    ({"kind": "video", "image_size": 64}, 4, "unknown kind"),
    ({"kind": "clip", "image_size": 0}, 1, "image_size must be an integer"),
    ({"kind": "clip", "image_size": 56, "resample": "cubic"}, 1, "unknown resample filter"),
    ({"kind": "clip", "image_size": 56, "std": [0.5, 0.0, 0.5]}, 1, "std must be"),
    ({"kind": "clip", "image_size": 56, "mean": [0.5]}, 1, "mean must be a list of 3"),
    ({"kind": "idefics3", "image_size": [64, 32]}, 1, "square"),
    ([1, 2], 1, "expected a JSON object"),
])
def test_bad_params_are_errors(driver, tmp_path, params, code, text):
    (tmp_path / "p.json").write_text(json.dumps(params))
    (tmp_path / "in.rgb").write_bytes(bytes(12))
    rc, info = run_driver(driver, "preprocess", tmp_path / "p.json", f"raw:2:2:{tmp_path / 'in.rgb'}", tmp_path / "o.f32")
    assert rc == 2 and info["error"] == code and text in info["message"], info
