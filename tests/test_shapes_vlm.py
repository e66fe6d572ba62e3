"""The embedded shapes VLM: shipped files, held-out accuracy, transformers parity, CLI eval and demo."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from edgevlm.evaluate import vqa_accuracy
from edgevlm.models import load
from edgevlm.zoo import path, shapes_data
from edgevlm.zoo.train_shapes import TrainConfig, train

SHIPPED = path("shapes-vlm")


@pytest.fixture(scope="module")
def shapes_vlm():
    return load("shapes-vlm")


def test_shipped_files_are_safetensors_and_json_only():
    names = sorted(p.name for p in SHIPPED.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
            "chat_template.jinja", "eval.json", "training.json"} <= set(names)
    assert all(n.endswith((".json", ".safetensors", ".jinja", ".md")) for n in names), names
    assert (SHIPPED / "model.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_accuracy_on_100_heldout_questions_reproduces_the_record(shapes_vlm):
    recorded = json.loads((SHIPPED / "eval.json").read_text())["heldout_100"]
    result = vqa_accuracy(shapes_vlm.model, shapes_vlm.processor, 100)
    assert result.accuracy == pytest.approx(recorded["accuracy"])
    assert result.by_type == pytest.approx(recorded["by_type"])
    assert result.accuracy >= 0.95
    assert set(result.by_type) == {"color", "count", "exists", "position", "caption"}
    assert min(result.by_type.values()) >= 0.90, result.by_type


def test_transformers_runs_the_shipped_checkpoint(shapes_vlm):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hf = AutoModelForImageTextToText.from_pretrained(SHIPPED).eval()
    proc = AutoProcessor.from_pretrained(SHIPPED)
    scene = shapes_data.make_scene(shapes_data.HELDOUT_BASE + 3)
    image = shapes_data.render(scene)
    text = shapes_vlm.processor.chat_prompt("Describe the image.", 1)
    inputs = proc(text=text, images=[image], return_tensors="pt")
    ours = shapes_vlm.processor(text, [image])
    assert ours.input_ids == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        diff = (hf(**inputs).logits - shapes_vlm.model(torch.tensor([ours.input_ids]), torch.from_numpy(ours.pixel_values))).abs().max()
    assert diff.item() <= 1e-4
    out = hf.generate(**inputs, max_new_tokens=40, do_sample=False)
    answer = proc.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert shapes_data.normalize_answer(answer) == shapes_data.normalize_answer(shapes_data.caption(scene))


def edgevlm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevlm", *map(str, args)], capture_output=True, text=True, timeout=600, check=True)


def test_cli_eval_vqa_and_ppl(data_dir):
    vqa = json.loads(edgevlm("eval", "shapes-vlm", "--vqa", "--n", "25", "--json").stdout)
    assert vqa["n"] == 25 and set(vqa["by_type"]) == set(shapes_data.QUESTION_TYPES) and vqa["accuracy"] >= 0.9
    table = edgevlm("eval", "shapes-vlm", "--vqa", "--n", "10").stdout
    assert "overall" in table and "caption" in table
    ppl = json.loads(edgevlm("eval", "stories260k", "--ppl", data_dir / "text/tinystories_sample.txt", "--json").stdout)
    assert ppl["loss"] == pytest.approx(1.27, abs=0.01) and ppl["tokens"] == 1804


def test_eval_needs_exactly_one_task():
    r = subprocess.run([sys.executable, "-m", "edgevlm", "eval", "shapes-vlm"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "exactly one of --vqa or --ppl" in r.stderr


def test_vqa_on_a_text_only_model_is_refused():
    r = subprocess.run([sys.executable, "-m", "edgevlm", "eval", "stories260k", "--vqa", "--n", "5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "text-only" in r.stderr


def test_demo_answers_questions_about_a_drawn_picture(tmp_path):
    """The demo on the native target only (the all-target run is the README test's)."""
    out = json.loads(edgevlm("demo", "--seed", "3", "--image-out", tmp_path / "demo.png", "--bundle",
                             tmp_path / "demo.evlm", "--targets", "native", "--json").stdout)
    assert (tmp_path / "demo.png").is_file()
    assert out["backends"] == ["torch", "native"] and len(out["questions"]) == 5
    for backend in out["backends"]:
        assert out["benchmark"][backend]["correct"] >= 4
        assert sum(q["answers"][backend]["correct"] for q in out["questions"]) == out["benchmark"][backend]["correct"]
    assert "onnx" in out["not_run"] and out["seconds"] > 0


def test_training_script_runs_end_to_end(tmp_path):
    """A few steps of the real training script write a checkpoint that loads and answers."""
    meta = train(TrainConfig(steps=3, batch_size=2, eval_every=3, eval_n=5), tmp_path / "model", eval_sizes=(5,))
    assert meta["steps_done"] == 3 and len(meta["history"]) == 1
    loaded = load(tmp_path / "model")
    assert loaded.family == "smolvlm" and loaded.model.tokens_per_tile == 16
    assert json.loads((tmp_path / "model" / "eval.json").read_text())["heldout_5"]["n"] == 5


def test_training_runs_every_step_unless_a_time_cap_is_asked_for(tmp_path):
    """No wall-clock cap by default (a rerun must not save a cut schedule); --max-minutes stops early and says so."""
    assert TrainConfig().max_minutes is None
    console = Console(record=True, width=200)
    meta = train(TrainConfig(steps=3, batch_size=2, eval_every=3, eval_n=5, max_minutes=0.0), tmp_path / "model",
                 console=console, eval_sizes=(5,))
    assert meta["steps_done"] == 1 and meta["history"][-1]["step"] == 1
    assert "stopped at step 1 of 3 by --max-minutes" in console.export_text()


def test_training_is_deterministic_for_a_seed_on_one_host(tmp_path):
    """The same seed gives the same weights and tokenizer (scenes, batch order and init all come from
    the seed); another seed gives other weights. Across hosts only the accuracy is comparable."""
    from safetensors.torch import load_file

    def run(seed: int, name: str) -> dict:
        train(TrainConfig(seed=seed, steps=4, batch_size=2, eval_every=100, eval_n=2), tmp_path / name,
              console=Console(file=io.StringIO()), eval_sizes=())
        return load_file(str(tmp_path / name / "model.safetensors"))

    a, b, other = run(0, "a"), run(0, "b"), run(1, "c")
    assert a.keys() == b.keys() == other.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert not all(torch.equal(a[k], other[k]) for k in a)
