"""``edgevlm demo``: the embedded shapes VLM looks at a freshly drawn picture and answers questions."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from ..generate import generate
from ..models import load
from ..sampling import SamplingParams
from ..zoo import shapes_data
from .output import console, err_console, print_json, table

HELP = "Draw a shapes picture, ask the embedded VLM about it and print its answers next to the truth."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shapes-vlm", help="model (default: the embedded shapes-vlm)")
    p.add_argument("--seed", type=int, default=2, help="which held-out picture to draw")
    p.add_argument("--image-out", type=Path, default=Path("edgevlm-demo.png"), help="where to save the picture")


def main(args: argparse.Namespace) -> int:
    with err_console.status(f"loading {args.model}"):
        loaded = load(args.model)
    scene = shapes_data.make_scene(shapes_data.HELDOUT_BASE + args.seed)
    image = shapes_data.render(scene)
    Image.fromarray(image).save(args.image_out)
    rows, records = [], []
    for qa in shapes_data.questions(scene):
        result = generate(loaded, qa.question, [image], SamplingParams(max_new_tokens=48))
        answer = result.text.strip()
        ok = shapes_data.normalize_answer(answer) == shapes_data.normalize_answer(qa.answer)
        records.append({"question": qa.question, "answer": answer, "truth": qa.answer, "correct": ok,
                        "ttft_ms": round(result.stats.ttft_ms, 2), "decode_tps": round(result.stats.decode_tps, 1)})
        rows.append([qa.question, answer, qa.answer, "yes" if ok else "NO"])
    if args.json:
        print_json({"model": str(loaded.path), "image": str(args.image_out), "seed": scene.seed, "answers": records})
        return 0
    shapes = f"{len(scene.shapes)} shape{'s' if len(scene.shapes) > 1 else ''}"
    console.print(f"picture: {args.image_out} ({scene.width}x{scene.height}, {shapes})")
    console.print(table(f"{loaded.path.name} answers", ["question", "answer", "truth", "correct"], rows))
    return 0
