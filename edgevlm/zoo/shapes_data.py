"""A procedural visual question answering dataset: colored shapes on a plain background.

Each scene is drawn from one integer seed: an image of 128-256 px per side (width and height drawn
separately) holding 1-4 shapes of distinct kinds, each in a named color, in one of four places
(left, right, top, bottom) and of random size. Questions of five types come with exact answers:

- ``color``: "What color is the circle?" -> "red"
- ``count``: "How many shapes are there?" -> "three"
- ``exists``: "Is there a red square?" -> "yes" / "no" (half of them "no")
- ``position``: "Where is the triangle?" -> "left" / "right" / "top" / "bottom"
- ``caption``: "Describe the image." -> "a red circle on the left and an orange star at the top."

Training scenes use seeds from 0 up; held-out scenes use seeds from ``HELDOUT_BASE`` up, so the two
splits never share a scene.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLORS = {
    "red": (220, 35, 35),
    "green": (35, 160, 50),
    "blue": (40, 80, 225),
    "yellow": (240, 205, 25),
    "purple": (140, 55, 185),
    "orange": (250, 135, 20),
}
PLACES = ("left", "top", "right", "bottom")  # also the order shapes are named in captions
PLACE_CENTERS = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8)}
RADIUS = (0.13, 0.18)  # of the shorter side
PLACE_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
NUMBERS = ("zero", "one", "two", "three", "four")
QUESTION_TYPES = ("color", "count", "exists", "position", "caption")
HELDOUT_BASE = 1_000_000_000


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    place: str
    radius: float  # in pixels
    center: tuple[float, float]  # (x, y) in pixels


@dataclass(frozen=True)
class Scene:
    seed: int
    width: int
    height: int
    background: tuple[int, int, int]
    shapes: tuple[Shape, ...]

    def find(self, kind: str) -> Shape | None:
        return next((s for s in self.shapes if s.kind == kind), None)


@dataclass(frozen=True)
class QA:
    kind: str  # one of QUESTION_TYPES
    question: str
    answer: str


def make_scene(seed: int) -> Scene:
    """The scene of one seed (deterministic)."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(128, 257, size=2))
    gray = int(rng.integers(225, 256))
    background = tuple(int(np.clip(gray + d, 0, 255)) for d in rng.integers(-6, 7, size=3))
    n = int(rng.integers(1, 5))
    kinds = rng.choice(SHAPES, size=n, replace=False)
    places = rng.choice(PLACES, size=n, replace=False)
    side = min(width, height)
    shapes = []
    for kind, place in zip(kinds, places):
        color = str(rng.choice(list(COLORS)))
        cx, cy = PLACE_CENTERS[str(place)]
        cx += rng.uniform(-0.03, 0.03)
        cy += rng.uniform(-0.03, 0.03)
        radius = float(rng.uniform(*RADIUS)) * side
        shapes.append(Shape(str(kind), color, str(place), radius, (cx * width, cy * height)))
    return Scene(seed, width, height, background, tuple(shapes))


def _star(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = rotation + i * math.pi / 5 - math.pi / 2
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render(scene: Scene) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` image of a scene."""
    rng = np.random.default_rng(scene.seed + 7)
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(COLORS[s.color], jitter))
        (cx, cy), r = s.center, s.radius
        if s.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s.kind == "square":
            h = r * 0.85
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif s.kind == "triangle":
            draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)
        elif s.kind == "star":
            draw.polygon(_star(cx, cy, r * 1.1, float(rng.uniform(-0.2, 0.2))), fill=fill)
    return np.array(image)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene) -> str:
    ordered = sorted(scene.shapes, key=lambda s: PLACES.index(s.place))
    parts = [f"{article(s.color)} {s.color} {s.kind} {PLACE_PHRASES[s.place]}" for s in ordered]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text + "."


def question(scene: Scene, kind: str, rng: np.random.Generator) -> QA:
    """One question of type ``kind`` about ``scene``."""
    if kind == "count":
        return QA(kind, "How many shapes are there?", NUMBERS[len(scene.shapes)])
    if kind == "caption":
        return QA(kind, "Describe the image.", caption(scene))
    target = scene.shapes[int(rng.integers(len(scene.shapes)))]
    if kind == "color":
        return QA(kind, f"What color is the {target.kind}?", target.color)
    if kind == "position":
        return QA(kind, f"Where is the {target.kind}?", target.place)
    if kind == "exists":
        if rng.random() < 0.5:
            return QA(kind, f"Is there {article(target.color)} {target.color} {target.kind}?", "yes")
        present = {(s.kind, s.color) for s in scene.shapes}
        while True:
            probe = (str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))))
            if probe not in present:
                return QA(kind, f"Is there {article(probe[1])} {probe[1]} {probe[0]}?", "no")
    raise ValueError(f"unknown question type {kind!r}; known: {', '.join(QUESTION_TYPES)}")


def questions(scene: Scene) -> list[QA]:
    """One question of every type about a scene, in a seed-determined order."""
    rng = np.random.default_rng(scene.seed + 13)
    qas = [question(scene, kind, rng) for kind in QUESTION_TYPES]
    return [qas[i] for i in rng.permutation(len(qas))]


def heldout(n: int, start: int = 0) -> Iterator[tuple[Scene, QA]]:
    """``n`` held-out (scene, question) pairs, question types in turn (so every type gets n/5)."""
    for i in range(start, start + n):
        scene = make_scene(HELDOUT_BASE + i)
        rng = np.random.default_rng(HELDOUT_BASE + i + 29)
        yield scene, question(scene, QUESTION_TYPES[i % len(QUESTION_TYPES)], rng)


def normalize_answer(text: str) -> str:
    """Exact-match normal form: lower case, single spaces, no surrounding spaces or final period."""
    return " ".join(text.lower().split()).rstrip(".").strip()


def corpus(n_scenes: int = 2000) -> Iterator[str]:
    """Every text the model sees, as it appears in its chat turns, for tokenizer training."""
    for seed in range(n_scenes):
        for qa in questions(make_scene(seed)):
            yield f"User: {qa.question}\nAssistant: {qa.answer}"
