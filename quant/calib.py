"""Calibration data: what the model reads while GPTQ, AWQ and static activation scales look at it.

Sources (``--calib``, repeatable):

- a text file (``.txt``): documents split on ``<|endoftext|>``, tokenized, cut into windows;
- an image file or a folder of images: each image asked "Describe the image." through the chat template
  (a folder without images: its ``.txt`` files are read as text);
- ``shapes``: scenes of the procedural shapes dataset's *training* split (never the held-out seeds),
  one question and its answer per scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..evaluate import read_documents
from ..processing.processor import Processor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm"}
IMAGE_PROMPT = "Describe the image."
SHAPES_SEED_BASE = 500_000_000  # far from training (seed * 1e7 + step * batch) and held-out (1e9 +) seeds


@dataclass
class CalibSample:
    input_ids: torch.Tensor  # [1, T]
    pixel_values: torch.Tensor | None = None  # [tiles, 3, S, S]

    @property
    def tokens(self) -> int:
        return self.input_ids.shape[1]


def text_samples(processor: Processor, path: Path, seq_len: int, limit: int) -> list[CalibSample]:
    out = []
    for doc in read_documents(path):
        ids = processor.tokenizer.encode(doc)
        for i in range(0, len(ids), seq_len):
            window = ids[i:i + seq_len]
            if len(window) >= 8:
                out.append(CalibSample(torch.tensor([window])))
            if len(out) >= limit:
                return out
    return out


def _with_images(processor: Processor, prompt: str, images: list) -> CalibSample:
    inputs = processor(prompt, images)
    pixels = None if inputs.pixel_values is None else torch.from_numpy(inputs.pixel_values)
    return CalibSample(torch.tensor([inputs.input_ids]), pixels)


def image_samples(processor: Processor, paths: list[Path], limit: int) -> list[CalibSample]:
    if not processor.supports_images:
        raise InputError(f"calibration images given ({paths[0]}) but the model is text-only")
    return [_with_images(processor, processor.chat_prompt(IMAGE_PROMPT, 1), [p]) for p in paths[:limit]]


def shapes_samples(processor: Processor, limit: int, start: int = 0) -> list[CalibSample]:
    from ..zoo import shapes_data

    if not processor.supports_images:
        raise InputError("the shapes calibration set needs a vision-language model; this one is text-only")
    out = []
    for i in range(start, start + limit):
        scene = shapes_data.make_scene(SHAPES_SEED_BASE + i)
        qa = shapes_data.questions(scene)[i % len(shapes_data.QUESTION_TYPES)]
        out.append(_with_images(processor, processor.chat_prompt(qa.question, 1) + qa.answer, [shapes_data.render(scene)]))
    return out


def load_calibration(processor: Processor, sources: list[str | Path], max_samples: int = 128,
                     seq_len: int = 256) -> list[CalibSample]:
    """Calibration samples from every source, up to ``max_samples`` per source."""
    samples: list[CalibSample] = []
    for source in sources:
        if str(source) == "shapes":
            samples += shapes_samples(processor, max_samples)
            continue
        path = Path(source)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            texts = sorted(p for p in path.iterdir() if p.suffix.lower() == ".txt")
            if not images and not texts:
                raise InputError(f"{path}: no images or .txt files to calibrate on")
            if images:  # an image folder (its text files are licenses and notes, not prompts)
                samples += image_samples(processor, images, max_samples)
            else:
                for t in texts:
                    samples += text_samples(processor, t, seq_len, max_samples)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            samples += image_samples(processor, [path], 1)
        elif path.is_file():
            samples += text_samples(processor, path, seq_len, max_samples)
        else:
            raise InputError(f"{path}: calibration source not found (a text file, an image, a folder, or 'shapes')")
    if not samples:
        raise InputError("the calibration sources gave no samples")
    return samples


def default_calibration(processor: Processor, model_name: str) -> list[str] | None:
    """Calibration the embedded models come with: the shapes training split for shapes-vlm."""
    return ["shapes"] if model_name == "shapes-vlm" else None


__all__ = ["CalibSample", "load_calibration", "default_calibration"]
