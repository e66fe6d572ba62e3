"""Image preprocessing and prompt building vs the transformers processors at real model sizes."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import CLIPImageProcessor, Idefics3ImageProcessor, LlavaImageProcessor

from edgevlm.errors import InputError
from edgevlm.models.clip.processing import ClipImageProcessor
from edgevlm.models.smolvlm.processing import SmolVLMProcessor
from edgevlm.processing.image import load_image

TOL = 1e-5


def smolvlm_processor(cfg: dict) -> SmolVLMProcessor:
    return SmolVLMProcessor(tokenizer=None, chat_template=None, image_config=cfg, tokens_per_tile=64,
                            tile_size=cfg["max_image_size"]["longest_edge"])


# SmolVLM-256M/500M (2048 -> 512 px tiles), Idefics3 defaults (1456 -> 364), splitting off
IDEFICS3_CONFIGS = [
    dict(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512}),
    dict(size={"longest_edge": 1456}, max_image_size={"longest_edge": 364}),
    dict(size={"longest_edge": 512}, max_image_size={"longest_edge": 512}, do_image_splitting=False),
]


@pytest.mark.parametrize("cfg", IDEFICS3_CONFIGS, ids=["smolvlm-2048-512", "idefics3-1456-364", "no-split"])
def test_idefics3_image_processor(images, cfg):
    hf = Idefics3ImageProcessor(**cfg)
    ours = smolvlm_processor(cfg)
    for path in images:
        ref = hf(images=[[load_image(path)]], return_tensors="np", return_row_col_info=True)
        tiles = ours.preprocess_image(load_image(path))
        assert tiles.pixel_values.shape == ref["pixel_values"][0].shape, path.name
        assert np.abs(tiles.pixel_values - ref["pixel_values"][0]).max() <= TOL, path.name
        assert (tiles.rows, tiles.cols) == (ref["rows"][0][0], ref["cols"][0][0]), path.name
        assert ours.layout(*load_image(path).shape[:2]) == (tiles.rows, tiles.cols)


@pytest.mark.parametrize("size", [336, 224])
def test_clip_image_processor(images, size):
    hf = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    ours = ClipImageProcessor(hf.to_dict(), size)
    for path in images:
        ref = hf(images=load_image(path), return_tensors="np")["pixel_values"]
        got = ours(load_image(path))
        assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL, path.name


def test_llava_pad_to_square_processor(images):
    hf = LlavaImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True)
    ours = ClipImageProcessor(hf.to_dict(), 336)
    assert ours.pad_to_square
    for path in images:
        ref = hf(images=load_image(path), return_tensors="np")["pixel_values"]
        assert np.abs(ours(load_image(path)) - ref).max() <= TOL, path.name


def test_load_image_forms(images, tmp_path):
    from PIL import Image

    rgb = load_image(images[0])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert np.array_equal(load_image(Image.open(images[0])), rgb)
    assert np.array_equal(load_image(images[0].read_bytes()), rgb)
    gray = load_image(rgb[..., 0])
    assert gray.shape == rgb.shape
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])  # fully transparent -> white
    assert (load_image(rgba) == 255).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"not an image at all", "not a readable image"),
        (np.zeros((4, 4, 2), np.uint8), "must be"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((0, 4, 3), np.uint8), "must be"),
        (3.14, "unsupported image type"),
    ],
)
def test_bad_images(bad, message):
    with pytest.raises(InputError, match=message):
        load_image(bad)


def test_truncated_and_missing_image_files(images, tmp_path):
    data = images[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("fixture", ["smolvlm_dir", "llava_dir"])
def test_prompt_ids_equal_transformers_on_every_photo(request, fixture, images):
    from transformers import AutoProcessor

    from edgevlm.models import load

    d = request.getfixturevalue(fixture)
    ours, hf = load(d).processor, AutoProcessor.from_pretrained(d)
    text = ours.chat_prompt("Describe the picture.", 1)
    for path in images:
        ref = hf(text=text, images=[load_image(path)], return_tensors="np")
        got = ours(text, [path])
        assert got.input_ids == ref["input_ids"][0].tolist(), path.name
        assert np.abs(got.pixel_values - ref["pixel_values"].reshape(got.pixel_values.shape)).max() <= TOL, path.name
