"""The C++ image decoders (runtimes/core/codec*.cpp) against Pillow as the Python loader uses it
(edgevlm/processing/image.py load_image), through runtimes/tests/driver_image.cpp.

Equality is exact everywhere: the demo picture, and generated files in every variant the decoders
read: PNG (every color type, bit depth, filter, Adam7, palette and tRNS), JPEG (Pillow-encoded at
any quality, 4:4:4 / 4:2:2 / 4:2:0, progressive, restart markers, gray, CMYK, Adobe RGB; and written
by tests/image_samples.py: other sampling factors, non-interleaved scans, YCCK, RGB by component
ids, default Huffman tables), BMP, GIF and PNM. The real photos are in tests/test_native_image.py.
Corrupted copies of files give an image or an error, never a crash; this file also runs under the
sanitizers (tests/test_native_ctest.py).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import image_samples as samples
from edgevlm.errors import InputError
from edgevlm.processing.image import load_image

EXAMPLES = settings(max_examples=30, deadline=None, database=None)


@pytest.fixture(scope="module")
def driver(native_build) -> Path:
    return native_build / "driver_image"


def cpp_decode(driver: Path, data: bytes) -> np.ndarray | str:
    """The decoded RGB [H, W, 3], or the error message."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out.rgb"
        src.write_bytes(data)
        proc = subprocess.run([str(driver), "decode", str(src), str(out)], capture_output=True, text=True, timeout=120)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        if proc.returncode != 0:
            assert proc.returncode == 2 and info["error"] == 1, (proc.returncode, info, proc.stderr[-2000:])
            return info["message"]
        return np.fromfile(out, dtype=np.uint8).reshape(info["height"], info["width"], 3)


def assert_exact(driver: Path, data: bytes, what: str) -> None:
    ref = load_image(data)
    got = cpp_decode(driver, data)
    assert not isinstance(got, str), (what, got)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() == 0, (what, int(diff.max()), int((diff > 0).sum()))


def assert_exact_or_both_refuse(driver: Path, data: bytes, what: str) -> None:
    try:
        load_image(data)
    except InputError:
        assert isinstance(cpp_decode(driver, data), str), f"{what}: Pillow refuses it, the C++ decoder does not"
        return
    assert_exact(driver, data, what)


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def picture(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """Smooth gradients with noise: what photos look like to a codec (pure noise is atypical for JPEG)."""
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * (3 + i) + y * (5 - i) + 40 * np.sin(x / (4 + i)) * np.cos(y / 3)) % 256 for i in range(c)]
    return np.clip(np.stack(base, -1) + rng.integers(-25, 26, (h, w, c)), 0, 255).astype(np.uint8)


def test_demo_picture_decodes_exactly(driver):
    from edgevlm.zoo import shapes_data

    scene = shapes_data.make_scene(shapes_data.HELDOUT_BASE + 2)  # what `edgevlm demo` draws and saves
    assert_exact(driver, pil_bytes(Image.fromarray(shapes_data.render(scene)), "PNG"), "edgevlm-demo.png")


# ---- PNG -----------------------------------------------------------------------------------------
@EXAMPLES
@given(ct=st.sampled_from(sorted(samples.PNG_DEPTHS)), data=st.data(), w=st.integers(1, 37), h=st.integers(1, 19),
       interlace=st.booleans(), filters=st.lists(st.integers(0, 4), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_png_every_color_type_depth_filter_and_interlace(driver, ct, data, w, h, interlace, filters, seed):
    depth = data.draw(st.sampled_from(samples.PNG_DEPTHS[ct]), label="depth")
    transparency = data.draw(st.booleans(), label="tRNS") and ct in (0, 2, 3)
    rng = np.random.default_rng(seed)
    top = (1 << depth) - 1
    px = rng.integers(0, top + 1, (h, w, samples.PNG_SAMPLES[ct]))
    palette = trns = None
    if ct == 3:
        palette = rng.integers(0, 256, 3 * int(rng.integers(1, top + 2))).astype(np.uint8).tobytes()  # may be short
        if transparency:
            trns = rng.integers(0, 256, int(rng.integers(1, 257))).astype(np.uint8).tobytes()
    elif transparency:  # the key of a pixel that is there, or a 16-bit key whose low byte matters to Pillow
        key = px[int(rng.integers(h)), int(rng.integers(w))] if rng.integers(2) else rng.integers(0, 65536, px.shape[-1])
        trns = struct.pack(f">{px.shape[-1]}H", *map(int, key))
    png = samples.png(px, depth, ct, palette=palette, trns=trns, interlace=interlace, filters=filters,
                      idat_size=int(rng.integers(0, 64)))
    assert_exact(driver, png, f"PNG ct {ct} depth {depth} interlace {interlace} tRNS {trns is not None}")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_png_written_by_pillow(driver, mode):
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (33, 47, 4), dtype=np.uint8), "RGBA")
    im = rgba.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65536, (33, 47)).astype(np.uint16))
    for kw in ({}, {"optimize": True}, {"compress_level": 0}, {"compress_level": 9}):
        assert_exact(driver, pil_bytes(im, "PNG", **kw), f"{mode} {kw}")
    if mode in ("P", "L", "RGB"):
        key = 7 if mode != "RGB" else (1, 2, 3)
        assert_exact(driver, pil_bytes(im, "PNG", transparency=key), f"{mode} with transparency")


# ---- JPEG ----------------------------------------------------------------------------------------
@EXAMPLES
@given(mode=st.sampled_from(["RGB", "L", "CMYK"]), quality=st.integers(1, 100), subsampling=st.sampled_from([0, 1, 2]),
       progressive=st.booleans(), optimize=st.booleans(), restart=st.sampled_from([0, 1, 3]), keep_rgb=st.booleans(),
       w=st.integers(1, 70), h=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_jpeg_written_by_pillow(driver, mode, quality, subsampling, progressive, optimize, restart, keep_rgb, w, h, seed):
    px = picture(np.random.default_rng(seed), h, w, 4)
    im = Image.fromarray(px[..., :3]).convert(mode) if mode != "CMYK" else Image.fromarray(px, "CMYK")
    kw = dict(quality=quality, progressive=progressive, optimize=optimize)
    if mode == "RGB" and keep_rgb:
        kw["keep_rgb"] = True  # stored as RGB, Adobe transform 0; Pillow then allows 4:4:4 only
    else:
        kw["subsampling"] = subsampling
    if restart:
        kw["restart_marker_blocks"] = restart
    assert_exact(driver, pil_bytes(im, "JPEG", **kw), f"{mode} {kw}")


FACTORS = [[(1, 1)] * 3, [(2, 1), (1, 1), (1, 1)], [(1, 2), (1, 1), (1, 1)], [(2, 2), (1, 1), (1, 1)],
           [(4, 1), (1, 1), (1, 1)], [(4, 2), (2, 1), (1, 1)], [(3, 1), (1, 1), (1, 1)], [(1, 3), (1, 1), (1, 1)],
           [(2, 2), (2, 1), (1, 2)], [(1, 1), (2, 2), (1, 1)], [(2, 4), (1, 2), (1, 1)], [(3, 3), (1, 1), (1, 1)],
           [(4, 4), (2, 2), (1, 1)], [(2, 2)], [(1, 1)] * 4, [(2, 2), (1, 1), (1, 1), (2, 2)]]


@EXAMPLES
@given(factors=st.sampled_from(FACTORS), interleaved=st.booleans(), restart=st.sampled_from([0, 1, 2, 5]),
       markers=st.sampled_from(["jfif", "adobe0", "adobe1", "adobe2", "none", "rgb-ids", "no-dht"]),
       w=st.integers(1, 60), h=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_jpeg_sampling_factors_scans_and_color_markers(driver, factors, interleaved, restart, markers, w, h, seed):
    """Written by image_samples.jpeg: 4:4:0, 4:1:1, 3:1, mixed chroma factors; non-interleaved scans;
    YCCK / CMYK / RGB / YCbCr as the Adobe marker or component ids say; Annex K default tables."""
    planes = list(np.moveaxis(picture(np.random.default_rng(seed), h, w, len(factors)), -1, 0))
    kw = dict(interleaved=interleaved, restart=restart, jfif=markers == "jfif", dht=markers != "no-dht")
    if markers.startswith("adobe"):
        kw["adobe"] = int(markers[-1])
    if markers == "rgb-ids" and len(planes) == 3:
        kw["ids"] = [82, 71, 66]
    # 4:4:4:4 blocks per MCU may pass 10 for an interleaved scan: both decoders refuse that.
    assert_exact_or_both_refuse(driver, samples.jpeg(planes, factors, **kw), f"{factors} {kw}")


# ---- BMP, GIF, PNM -------------------------------------------------------------------------------
def bmp_cases() -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    w, h = 13, 7
    pix = rng.integers(0, 256, (h, w, 4))
    out = {}
    for header in (12, 40, 64, 108, 124):
        for bits in (1, 4, 8):
            pal = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(1 << bits)]
            rows = samples.bmp_rows(rng.integers(0, 1 << bits, (h, w)), bits)
            out[f"{bits}-bit palette, header {header}"] = samples.bmp(w, h, bits, rows, palette=pal, header=header)
            gray = [(0, 0, 0), (255, 255, 255)] if bits == 1 else [(i, i, i) for i in range(256)][:1 << bits]
            if bits != 4:  # Pillow reads a 4-bit gray-ramp palette wrongly; refused by both decoders
                out[f"{bits}-bit gray, header {header}"] = samples.bmp(w, h, bits, rows, palette=gray, header=header)
            if header != 12:
                out[f"{bits}-bit short palette, header {header}"] = samples.bmp(w, h, bits, rows, palette=pal[:3], header=header, colors=3)
        out[f"24-bit, header {header}"] = samples.bmp(w, h, 24, samples.bmp_rows(pix[..., :3], 24), header=header)
    out["24-bit top-down"] = samples.bmp(w, h, 24, samples.bmp_rows(pix[::-1, :, :3], 24), top_down=True)
    out["32-bit BI_RGB"] = samples.bmp(w, h, 32, samples.bmp_rows(pix, 32))
    for masks in [(0xFF0000, 0xFF00, 0xFF, 0xFF000000), (0xFF0000, 0xFF00, 0xFF, 0), (0xFF, 0xFF00, 0xFF0000, 0xFF000000),
                  (0xFF000000, 0xFF0000, 0xFF00, 0xFF), (0xFF000000, 0xFF00, 0xFF, 0xFF0000), (0, 0, 0, 0)]:
        out[f"32-bit bitfields {masks}"] = samples.bmp(w, h, 32, samples.bmp_rows(pix, 32), compression=3, masks=masks, header=124)
    v16 = rng.integers(0, 65536, (h, w)).astype("<u2").view(np.uint8).reshape(h, w, 2)
    out["16-bit 5-5-5"] = samples.bmp(w, h, 16, samples.bmp_rows(v16, 16))
    out["16-bit bitfields 5-6-5"] = samples.bmp(w, h, 16, samples.bmp_rows(v16, 16), compression=3, masks=(0xF800, 0x7E0, 0x1F))
    pal = [(10, 20, 30), (200, 100, 50), (0, 255, 0), (9, 9, 9)]
    # (count, index) runs; 0 0 ends a row, 0 1 the bitmap, 0 2 dx dy moves, 0 n starts n literal pixels
    # (padded to an even file offset). A bitmap that ends early is refused, as by Pillow.
    rle = {"RLE8 runs": (4, 2, 8, [4, 1, 0, 0, 2, 2, 2, 3, 0, 1]),
           "RLE8 delta": (4, 3, 8, [4, 1, 0, 0, 0, 2, 2, 1, 2, 3, 0, 1]),
           "RLE8 literal": (4, 2, 8, [0, 4, 2, 3, 1, 0, 0, 0, 4, 2, 0, 1]),
           "RLE8 odd literal": (5, 2, 8, [0, 3, 2, 3, 1, 0, 2, 1, 0, 0, 5, 3, 0, 1]),
           "RLE8 ends early": (4, 4, 8, [4, 1, 0, 0, 0, 1]),
           "RLE4": (5, 2, 4, [5, 0x12, 0, 0, 0, 5, 0x30, 0x12, 0x30, 0, 0, 0, 0, 1])}
    for name, (w, h, bits, data) in rle.items():
        out[name] = samples.bmp(w, h, bits, bytes(data), palette=pal, compression=1 if bits == 8 else 2, colors=4)
    return out


BMP_CASES = bmp_cases()


@pytest.mark.parametrize("name", sorted(BMP_CASES))
def test_bmp_variants(driver, name):
    assert_exact_or_both_refuse(driver, BMP_CASES[name], name)


def test_bmp_and_gif_written_by_pillow(driver):
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(picture(rng, 29, 37, 3))
    for mode in ("1", "L", "P", "RGB"):
        assert_exact(driver, pil_bytes(rgb.convert(mode), "BMP"), f"BMP {mode}")
    p = rgb.convert("P")
    assert_exact(driver, pil_bytes(p, "GIF"), "GIF")
    assert_exact(driver, pil_bytes(p, "GIF", transparency=5), "GIF transparency")
    assert_exact(driver, pil_bytes(p, "GIF", interlace=True), "GIF interlace")
    assert_exact(driver, pil_bytes(rgb.convert("L"), "GIF"), "GIF gray")
    frames = [Image.fromarray(picture(rng, 29, 37, 3)).convert("P") for _ in range(3)]
    assert_exact(driver, pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]), "animated GIF, first frame")


@EXAMPLES
@given(sw=st.integers(1, 30), sh=st.integers(1, 20), data=st.data(), palette=st.sampled_from(["global", "local", "ramp", "none"]),
       interlace=st.booleans(), transparent=st.booleans(), mcs=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_gif_first_frame(driver, sw, sh, data, palette, interlace, transparent, mcs, seed):
    """Frames at an offset (past the screen too), color tables of any size, indices past them."""
    rng = np.random.default_rng(seed)
    x, y = data.draw(st.integers(0, sw), label="x"), data.draw(st.integers(0, sh), label="y")
    fw, fh = data.draw(st.integers(1, 24), label="fw"), data.draw(st.integers(1, 16), label="fh")
    n = int(rng.integers(1, (1 << mcs) + 1))
    colors = rng.integers(0, 256, 3 * n).astype(np.uint8).tobytes() if palette != "ramp" else bytes(np.repeat(np.arange(n), 3).astype(np.uint8))
    frame = dict(x=x, y=y, w=fw, h=fh, indices=[int(v) for v in rng.integers(0, 1 << mcs, fw * fh)], interlace=interlace,
                 transparent=int(rng.integers(0, 1 << mcs)) if transparent else None, min_code_size=mcs,
                 local_colors=colors if palette == "local" else None)
    gif = samples.gif(sw, sh, frame, global_colors=colors if palette in ("global", "ramp") else None)
    assert_exact(driver, gif, f"GIF {palette} frame {fw}x{fh} at {x},{y}")


def test_pnm_variants(driver):
    rng = np.random.default_rng(4)
    for maxval in (1, 7, 100, 255, 256, 1000, 65535):
        v = rng.integers(0, maxval + 1, (5, 6, 3))
        dt = np.uint8 if maxval < 256 else ">u2"
        assert_exact(driver, b"P6\n6 5\n%d\n" % maxval + v.astype(dt).tobytes(), f"P6 {maxval}")
        assert_exact(driver, b"P5 6 5 %d\n" % maxval + v[..., 0].astype(dt).tobytes(), f"P5 {maxval}")
        text = " ".join(map(str, v.reshape(-1).tolist())).encode()
        assert_exact(driver, b"P3\n# a comment\n6 5\n%d\n" % maxval + text, f"P3 {maxval}")
        assert_exact(driver, b"P2 6 5 %d\n" % maxval + " ".join(map(str, v[..., 0].reshape(-1).tolist())).encode(), f"P2 {maxval}")
    bits = rng.integers(0, 2, (5, 6))
    assert_exact(driver, b"P1\n6 5\n" + "".join(map(str, bits.reshape(-1).tolist())).encode(), "P1")
    assert_exact(driver, b"P4\n6 5\n" + bytes(int("".join(map(str, r.tolist())) + "00", 2) for r in bits), "P4")
    assert "PNM: file truncated (pixel data)" in cpp_decode(driver, b"P5 2 1 255\n\x05")


# ---- errors --------------------------------------------------------------------------------------
def test_other_formats_are_refused_by_name(driver):
    rgb = Image.fromarray(np.zeros((4, 5, 3), np.uint8))
    cases = {"TIFF": pil_bytes(rgb, "TIFF"), "Windows icon (ICO)": pil_bytes(rgb, "ICO"),
             "possibly TGA": pil_bytes(rgb, "TGA"), "Photoshop PSD": b"8BPS\x00\x01" + bytes(20),
             "Radiance HDR": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 5\n", "WebP": b"RIFF\x10\0\0\0WEBPVP8 " + bytes(8),
             "a PNM variant": b"Pf\n4 5\n-1\n" + bytes(80)}
    for name, data in cases.items():
        message = cpp_decode(driver, data)
        assert isinstance(message, str) and f"not a readable image (unknown format: {name}" in message, (name, message)
    message = cpp_decode(driver, b"\x01\x02\x03 not an image at all")
    assert "unknown format; first bytes 01 02 03 20" in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_limit_message_matches_python(driver):
    # 12000 x 10000: over the loader's 100 M pixels, under Pillow's own decompression-bomb error
    huge = samples.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 10000, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + huge + samples.png_chunk(b"IDAT", b"x") + samples.png_chunk(b"IEND", b"")
    with pytest.raises(InputError) as python:
        load_image(data)
    message = cpp_decode(driver, data)
    assert str(python.value).split(": ", 1)[1] == "image of 12000x10000 pixels is too large"
    assert message.endswith(": image of 12000x10000 pixels is too large"), message
    jpeg = samples.jpeg([np.zeros((8, 8), np.uint8)], [(1, 1)])
    sof = jpeg.index(b"\xff\xc0")
    assert "image of 65535x65535 pixels is too large" in cpp_decode(driver, jpeg[:sof + 5] + b"\xff\xff\xff\xff" + jpeg[sof + 9:])


def test_directory_is_an_error(driver, tmp_path):
    proc = subprocess.run([str(driver), "decode", str(tmp_path), str(tmp_path / "o.rgb")], capture_output=True, text=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 2 and info["error"] == 2 and "is a directory" in info["message"], info


def corrupt_inputs(images: list[Path]) -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(picture(rng, 24, 31, 3))
    files = {p.name: p.read_bytes() for p in images}
    files.update({
        "progressive.jpg": pil_bytes(rgb, "JPEG", progressive=True, quality=90),
        "restart-422.jpg": pil_bytes(rgb, "JPEG", subsampling=1, restart_marker_blocks=2),
        "cmyk.jpg": pil_bytes(Image.fromarray(picture(rng, 24, 31, 4), "CMYK"), "JPEG"),
        "noninterleaved.jpg": samples.jpeg(list(np.moveaxis(picture(rng, 21, 27, 3), -1, 0)), [(2, 2), (1, 2), (1, 1)],
                                           interleaved=False, restart=2),
        "rgba.png": pil_bytes(rgb.convert("RGBA"), "PNG"),
        "adam7-16bit.png": samples.png(rng.integers(0, 65536, (13, 17, 3)), 16, 2, interlace=True, filters=[0, 1, 2, 3, 4]),
        "palette-trns.png": samples.png(rng.integers(0, 16, (13, 17, 1)), 4, 3, palette=bytes(range(48)), trns=b"\0\x80"),
        "interlaced.gif": pil_bytes(rgb.convert("P"), "GIF", interlace=True, transparency=3),
        "rle.bmp": BMP_CASES["RLE8 delta"], "rle4.bmp": BMP_CASES["RLE4"],
        "palette.bmp": BMP_CASES["4-bit palette, header 40"],
        "p6.ppm": b"P6 5 4 1000\n" + rng.integers(0, 1001, (4, 5, 3)).astype(">u2").tobytes(),
        "p2.pgm": b"P2\n5 4\n100\n" + " ".join(map(str, rng.integers(0, 101, 20))).encode(),
    })
    return files


def test_corrupted_files_give_an_image_or_an_error(driver, images, tmp_path):
    """Truncations, overwritten bytes and bit flips: in-process in the driver (fixed seeds), so the
    sanitizer build checks every read; small files also at every truncation length."""
    for name, data in corrupt_inputs(images).items():
        (tmp_path / name).write_bytes(data)
        runs = [("300", 1)] if len(data) > 20000 else [("400", 2), ("prefixes", 0)]
        for count, seed in runs:
            proc = subprocess.run([str(driver), "mutate", str(tmp_path / name), count, str(seed)], capture_output=True,
                                  text=True, timeout=1800)
            assert proc.returncode == 0, (name, proc.returncode, proc.stderr[-3000:])
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            assert result["unexpected"] == [], (name, result["unexpected"][:5])
            assert result["errors"] > 0, name
