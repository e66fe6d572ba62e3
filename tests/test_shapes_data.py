"""The procedural shapes dataset: deterministic, disjoint splits, answers true to the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevlm.models.smolvlm.model import SmolVLMForConditionalGeneration
from edgevlm.zoo import shapes_data as sd
from edgevlm.zoo.train_shapes import (
    IMAGE_CONFIG,
    build_processor,
    build_tokenizer,
    collate,
    loss_of,
    model_config,
    pack_scene,
)


def test_scenes_are_deterministic():
    a, b = sd.make_scene(42), sd.make_scene(42)
    assert a == b and np.array_equal(sd.render(a), sd.render(b))
    assert sd.make_scene(43) != a


def test_scene_constraints():
    for seed in range(300):
        s = sd.make_scene(seed)
        assert 128 <= s.width <= 256 and 128 <= s.height <= 256
        assert 1 <= len(s.shapes) <= 4
        assert len({x.kind for x in s.shapes}) == len(s.shapes) and len({x.place for x in s.shapes}) == len(s.shapes)
        img = sd.render(s)
        assert img.shape == (s.height, s.width, 3) and img.dtype == np.uint8


def test_shapes_are_drawn_where_the_scene_says():
    for seed in range(50):
        s = sd.make_scene(seed)
        img = sd.render(s).astype(int)
        for shape in s.shapes:
            x, y = (int(round(v)) for v in shape.center)
            pixel = img[y, x]
            assert np.abs(pixel - np.array(sd.COLORS[shape.color])).max() <= 13, (seed, shape)


def test_answers_follow_the_scene():
    for seed in range(200):
        s = sd.make_scene(seed)
        for qa in sd.questions(s):
            if qa.kind == "count":
                assert qa.answer == sd.NUMBERS[len(s.shapes)]
            elif qa.kind in ("color", "position"):
                kind = qa.question.rstrip("?").split()[-1]
                shape = s.find(kind)
                assert qa.answer == (shape.color if qa.kind == "color" else shape.place)
            elif qa.kind == "exists":
                *_, color, kind = qa.question.rstrip("?").split()
                present = any(x.kind == kind and x.color == color for x in s.shapes)
                assert qa.answer == ("yes" if present else "no")
            else:
                assert all(f"{x.color} {x.kind} " in qa.answer for x in s.shapes)
        assert sorted(q.kind for q in sd.questions(s)) == sorted(sd.QUESTION_TYPES)


def test_heldout_split_is_disjoint_and_balanced():
    held = list(sd.heldout(500))
    assert all(scene.seed >= sd.HELDOUT_BASE for scene, _ in held)
    counts = {t: sum(qa.kind == t for _, qa in held) for t in sd.QUESTION_TYPES}
    assert set(counts.values()) == {100}
    yes = sum(qa.answer == "yes" for _, qa in held if qa.kind == "exists")
    assert 30 <= yes <= 70


@pytest.mark.parametrize("text, expected", [(" Red. ", "red"), ("A  blue star.", "a blue star"), ("four", "four")])
def test_normalize_answer(text, expected):
    assert sd.normalize_answer(text) == expected


@pytest.fixture(scope="module")
def shapes_setup():
    backend = build_tokenizer()
    cfg = model_config(backend.get_vocab_size(), backend.token_to_id("<image>"))
    return cfg, build_processor(backend, cfg), backend.token_to_id("<|im_end|>")


def test_each_packed_segment_is_the_single_turn_chat(shapes_setup):
    _, proc, _ = shapes_setup
    scene = sd.make_scene(3)
    packed = pack_scene(proc, scene)
    image = sd.render(scene)
    prefix = [i for i, seg in zip(packed.ids, packed.segments) if seg == 0]
    for k, qa in enumerate(sd.questions(scene), start=1):
        segment = [i for i, seg in zip(packed.ids, packed.segments) if seg == k]
        chat = proc.chat_prompt(qa.question, 1) + " " + qa.answer + "<end_of_utterance>"
        assert prefix + segment == proc(chat, [image]).input_ids
        positions = [p for p, seg in zip(packed.positions, packed.segments) if seg == k]
        assert positions == list(range(len(prefix), len(prefix) + len(segment)))
        answer = [t for t, lab, seg in zip(packed.ids, packed.labels, packed.segments) if seg == k and lab != -100]
        assert proc.tokenizer.decode(answer) == " " + qa.answer + "<end_of_utterance>"
    assert packed.tiles.shape == (1, 3, 128, 128) and IMAGE_CONFIG["max_image_size"]["longest_edge"] == 128


def test_packed_loss_equals_separate_single_turn_sequences(shapes_setup):
    """Shared-prefix packing (per-row positions and a block mask) computes what separate prompts would."""
    cfg, proc, pad = shapes_setup
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(cfg)
    model.init_weights(0.2)
    scenes = [sd.make_scene(s) for s in (11, 12)]
    batch = collate([pack_scene(proc, s) for s in scenes], pad)
    packed = loss_of(model, batch).item()
    losses = []
    for scene in scenes:
        image = sd.render(scene)
        for qa in sd.questions(scene):
            prompt = proc(proc.chat_prompt(qa.question, 1), [image])
            full = proc(proc.chat_prompt(qa.question, 1) + " " + qa.answer + "<end_of_utterance>", [image])
            logits = model(torch.tensor([full.input_ids]), torch.from_numpy(full.pixel_values))[0, :-1]
            targets = torch.tensor(full.input_ids[1:])
            n_prompt = len(prompt.input_ids)
            losses.append(F.cross_entropy(logits[n_prompt - 1:], targets[n_prompt - 1:]).item())
    assert packed == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_dense_targets_label_shapes_where_they_are(shapes_setup):
    from edgevlm.zoo.train_shapes import token_targets

    _, proc, _ = shapes_setup
    labeled = total = 0
    for seed in range(60):
        scene = sd.make_scene(seed)
        targets = token_targets(proc, scene, 0, 0).reshape(4, 4, 3)  # one 128 px tile: 4 x 4 tokens
        truth = {(s.kind, s.color, s.place) for s in scene.shapes}
        found = {(sd.SHAPES[k - 1], list(sd.COLORS)[c - 1], sd.PLACES[p - 1]) for k, c, p in targets.reshape(-1, 3) if k}
        assert found <= truth, seed  # never a label that is not in the picture
        labeled, total = labeled + len(found), total + len(truth)
        for kind, _, place in found:  # tokens labeled with a shape sit on its side of the picture
            rows, cols = np.nonzero(targets[..., 0] == sd.SHAPES.index(kind) + 1)
            assert {"left": cols.mean() < 1.5, "right": cols.mean() > 1.5,
                    "top": rows.mean() < 1.5, "bottom": rows.mean() > 1.5}[place], seed
    assert labeled / total > 0.9  # a shape falling between token cells may go unlabeled
