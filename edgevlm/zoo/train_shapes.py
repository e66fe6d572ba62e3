"""Train the embedded shapes VLM from scratch: ``python -m edgevlm.zoo.train_shapes``.

The model is SmolVLM's architecture at a tiny size (SigLIP-style encoder on 64 px tiles, pixel
shuffle, Llama decoder, SmolVLM's image splitting and chat template), trained on the procedural
shapes dataset (:mod:`edgevlm.zoo.shapes_data`). Each training sequence packs one scene: the image
prefix once, then its five questions, each in its own segment that sees only the prefix and
itself (so it is the single-turn prompt used at run time); the loss is on the answers, every
question weighted alike. The result is written in the Hugging Face layout (Idefics3), so edgevlm and
transformers both load it.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer

from ..models.llama.config import LlamaConfig, RopeConfig
from ..models.siglip.config import SiglipVisionConfig
from ..models.smolvlm.config import SmolVLMConfig
from ..models.smolvlm.model import SmolVLMForConditionalGeneration
from ..models.smolvlm.processing import DEFAULT_CHAT_TEMPLATE, SmolVLMProcessor, grid_size, longest_edge_size
from ..processing.chat import ChatTemplate
from ..processing.tokenizer import Tokenizer
from ..processing.train_tokenizer import SMOLVLM_SPECIAL_TOKENS, train_bytelevel_bpe
from . import shapes_data

DEFAULT_OUT = Path(__file__).resolve().parent / "shapes-vlm"
VOCAB_SIZE = 512
IMAGE_CONFIG = {
    "do_resize": True, "size": {"longest_edge": 128}, "max_image_size": {"longest_edge": 128},
    "do_image_splitting": True, "resample": 1, "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    "do_pad": True,
}
SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 5000
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    vision_lr_scale: float = 1.0
    dense_weight: float = 0.5  # weight of the training-only dense image-token loss (DenseHead)
    threads: int = 2
    eval_every: int = 1000
    eval_n: int = 200
    # Optional wall-clock cap: stop early and still save. Off by default, because a cut cosine
    # schedule gives a weaker model, and a rerun must run every step to reproduce the shipped one.
    max_minutes: float | None = None


def model_config(vocab_size: int, image_token_id: int) -> SmolVLMConfig:
    """The shapes-vlm architecture, about 1.5M parameters (6 MB of fp32 weights).

    One 128 px encoder tile per image (the processor's longest edge equals the tile, so the
    split grid is 0 x 0 and the global tile is the whole picture), 16 px patches, pixel shuffle
    by 2: 16 image tokens. Smaller tiles cut shapes apart and learn far slower on this budget.
    """
    text = LlamaConfig(
        hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=vocab_size, rms_norm_eps=1e-5, max_position_embeddings=1024, tie_word_embeddings=True,
        rope=RopeConfig(rope_theta=10000.0), bos_token_id=None, eos_token_id=None,
    )
    vision = SiglipVisionConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                                image_size=128, patch_size=16)
    return SmolVLMConfig(text=text, vision=vision, scale_factor=2, image_token_id=image_token_id)


def build_tokenizer() -> HFTokenizer:
    texts = list(shapes_data.corpus(3000)) + ["User: Assistant: Describe the image."]
    return train_bytelevel_bpe(texts, VOCAB_SIZE, SMOLVLM_SPECIAL_TOKENS)


def build_processor(backend: HFTokenizer, cfg: SmolVLMConfig) -> SmolVLMProcessor:
    tokenizer = Tokenizer(backend, **SPECIAL)
    return SmolVLMProcessor(tokenizer, ChatTemplate(DEFAULT_CHAT_TEMPLATE, "smolvlm default"), IMAGE_CONFIG,
                            cfg.tokens_per_tile, cfg.vision.image_size)


# --- data ----------------------------------------------------------------------------------
@dataclass
class PackedScene:
    """One scene packed for training: the image prefix once, then each question as its own segment.

    Every segment sits at the positions right after the prefix and sees only the prefix and
    itself, so it is exactly the single-turn prompt "<image>Q" -> "A" the model answers at use
    time, while the image is encoded once for all five questions.
    """

    ids: list[int]
    labels: list[int]  # -100 outside answers
    positions: list[int]
    segments: list[int]  # 0 for the prefix, k for the k-th question
    tiles: np.ndarray  # [N, 3, S, S]
    token_targets: np.ndarray  # [N * tokens_per_tile, 3]: (kind, color, place) + 1 of the shape under each token, 0 = none


def token_targets(processor: SmolVLMProcessor, scene: shapes_data.Scene, rows: int, cols: int) -> np.ndarray:
    """What lies under the center of every image token, for the auxiliary dense loss.

    Follows the processor's geometry: the image is resized (longest edge, then to whole tiles),
    cut into rows x cols tiles plus the global tile (the whole image), and each tile's tokens
    cover a square grid of it in row-major order.
    """
    s = processor.tile_size
    side = int(round(processor.tokens_per_tile**0.5))
    cell = s / side
    regions = []  # (x0, y0, x1, y1) of each tile in original image pixels
    if rows:
        h, w = grid_size(*longest_edge_size(scene.height, scene.width, processor.longest_edge), s)
        sx, sy = scene.width / w, scene.height / h
        regions += [(c * s * sx, r * s * sy, sx, sy) for r in range(rows) for c in range(cols)]
    regions.append((0.0, 0.0, scene.width / s, scene.height / s))  # the global tile (or the only one)
    kinds = {k: i + 1 for i, k in enumerate(shapes_data.SHAPES)}
    colors = {c: i + 1 for i, c in enumerate(shapes_data.COLORS)}
    places = {p: i + 1 for i, p in enumerate(shapes_data.PLACES)}
    offsets = (np.arange(4) + 0.5) / 4  # 4 x 4 sample points per token cell
    out = np.zeros((len(regions) * side * side, 3), dtype=np.int64)
    n = 0
    for x0, y0, sx, sy in regions:
        for i in range(side):
            for j in range(side):
                xs = x0 + (j + offsets[None, :]) * cell * sx
                ys = y0 + (i + offsets[:, None]) * cell * sy
                hits = [np.sum((xs - sh.center[0]) ** 2 + (ys - sh.center[1]) ** 2 < (0.85 * sh.radius) ** 2) for sh in scene.shapes]
                best = int(np.argmax(hits))
                if hits[best] >= 3:  # the shape covers at least 3 of the 16 points
                    shape = scene.shapes[best]
                    out[n] = (kinds[shape.kind], colors[shape.color], places[shape.place])
                n += 1
    return out


def pack_scene(processor: SmolVLMProcessor, scene: shapes_data.Scene) -> PackedScene:
    tiles = processor.preprocess_image(shapes_data.render(scene))
    tok = processor.tokenizer
    prefix = tok.encode("<|im_start|>User:" + processor.image_prompt(tiles), add_special_tokens=False)
    ids, labels = list(prefix), [-100] * len(prefix)
    positions, segments = list(range(len(prefix))), [0] * len(prefix)
    for k, qa in enumerate(shapes_data.questions(scene), start=1):
        q = tok.encode(qa.question + "<end_of_utterance>\nAssistant:", add_special_tokens=False)
        a = tok.encode(" " + qa.answer + "<end_of_utterance>", add_special_tokens=False)
        ids += q + a
        labels += [-100] * len(q) + a
        positions += range(len(prefix), len(prefix) + len(q) + len(a))
        segments += [k] * (len(q) + len(a))
    targets = token_targets(processor, scene, tiles.rows, tiles.cols)
    return PackedScene(ids, labels, positions, segments, tiles.pixel_values, targets)


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]
    weights: torch.Tensor  # [B, T] each answer's tokens share weight 1, so every question counts alike
    positions: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, 1, T, T] bool
    tiles: torch.Tensor  # [N, 3, S, S]
    token_targets: torch.Tensor  # [N * tokens_per_tile, 3]


def collate(scenes: list[PackedScene], pad_id: int) -> Batch:
    width = max(len(s.ids) for s in scenes)
    b = len(scenes)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), -100, dtype=torch.long)
    positions = torch.zeros((b, width), dtype=torch.long)
    segments = torch.full((b, width), -1, dtype=torch.long)
    for i, s in enumerate(scenes):
        n = len(s.ids)
        ids[i, :n], labels[i, :n] = torch.tensor(s.ids), torch.tensor(s.labels)
        positions[i, :n], segments[i, :n] = torch.tensor(s.positions), torch.tensor(s.segments)
    answer = labels != -100
    per_segment = torch.zeros((b, 8)).scatter_add_(1, segments.clamp(min=0), answer.float())
    weights = torch.where(answer, 1.0 / per_segment.gather(1, segments.clamp(min=0)).clamp(min=1), 0.0)
    order = torch.arange(width)
    causal = order[None, :, None] >= order[None, None, :]
    visible = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
    mask = (causal & visible)[:, None]
    return Batch(ids, labels, weights, positions, mask, torch.from_numpy(np.concatenate([s.tiles for s in scenes])),
                 torch.from_numpy(np.concatenate([s.token_targets for s in scenes])))


def batches(processor: SmolVLMProcessor, cfg: TrainConfig, pad_id: int, depth: int = 4):
    """Training batches, made in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    base = cfg.seed * 10_000_000

    def work() -> None:
        for step in range(cfg.steps):
            seeds = range(base + step * cfg.batch_size, base + (step + 1) * cfg.batch_size)
            q.put(collate([pack_scene(processor, shapes_data.make_scene(s)) for s in seeds], pad_id))

    threading.Thread(target=work, daemon=True).start()
    for _ in range(cfg.steps):
        yield q.get()


class DenseHead(torch.nn.Module):
    """Training-only probe on the projected image tokens: kind, color and place of the shape under each.

    It gives the vision tower a direct, dense signal from the scene layout (the answers alone
    reach it only through the decoder's attention, which learns slowly). It is not saved.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.kind = torch.nn.Linear(hidden, len(shapes_data.SHAPES) + 1)
        self.color = torch.nn.Linear(hidden, len(shapes_data.COLORS) + 1)
        self.place = torch.nn.Linear(hidden, len(shapes_data.PLACES) + 1)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        flat = features.reshape(-1, features.shape[-1])
        return sum(F.cross_entropy(head(flat), targets[:, i]) for i, head in enumerate((self.kind, self.color, self.place)))


def loss_of(model: SmolVLMForConditionalGeneration, batch: Batch, head: DenseHead | None = None,
            dense_weight: float = 0.0) -> torch.Tensor:
    """Mean over questions of each answer's mean next-token cross-entropy (+ the dense loss)."""
    features = model.encode_images(batch.tiles)
    embeds = model.embed(batch.ids, features)
    hidden = model.language_model.hidden_states(embeds, batch.positions, batch.mask)
    logits = model.language_model.lm_head(hidden[:, :-1])
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels[:, 1:].reshape(-1),
                                 ignore_index=-100, reduction="none")
    weights = batch.weights[:, 1:].reshape(-1)
    loss = (token_loss * weights).sum() / weights.sum()
    if head is not None and dense_weight:
        loss = loss + dense_weight * head(features, batch.token_targets)
    return loss


# --- evaluation -------------------------------------------------------------------------------
def quick_accuracy(model, processor: SmolVLMProcessor, n: int) -> dict[str, float]:
    """Greedy exact-match accuracy, overall and per question type, on the first ``n`` held-out questions."""
    from ..evaluate import vqa_accuracy

    result = vqa_accuracy(model, processor, n)
    return {"overall": round(result.accuracy, 4), **{k: round(v, 4) for k, v in result.by_type.items()}}


# --- saving -----------------------------------------------------------------------------------
def write_checkpoint(model: SmolVLMForConditionalGeneration, backend: HFTokenizer, out: Path, meta: dict) -> Path:
    """Hugging Face layout (Idefics3): config.json, model.safetensors, tokenizer, processor config."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    (out / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2) + "\n")
    save_file(model.checkpoint_state_dict(), str(out / "model.safetensors"), metadata={"format": "pt"})
    backend.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        **SPECIAL, "model_max_length": cfg.text.max_position_embeddings, "tokenizer_class": "PreTrainedTokenizerFast",
        "processor_class": "Idefics3Processor"}, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    (out / "processor_config.json").write_text(json.dumps({
        "image_processor": {**IMAGE_CONFIG, "image_processor_type": "Idefics3ImageProcessor"},
        "image_seq_len": cfg.tokens_per_tile, "processor_class": "Idefics3Processor"}, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": backend.token_to_id(SPECIAL["eos_token"]),
                                                            "pad_token_id": backend.token_to_id(SPECIAL["pad_token"])}) + "\n")
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def train(cfg: TrainConfig, out: Path = DEFAULT_OUT, console: Console | None = None,
          eval_sizes: tuple[int, ...] = (100, 500)) -> dict:
    """Train, save to ``out`` and record held-out accuracy on ``eval_sizes`` questions (eval.json)."""
    console = console or Console(stderr=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    backend = build_tokenizer()
    mcfg = model_config(backend.get_vocab_size(), backend.token_to_id("<image>"))
    processor = build_processor(backend, mcfg)
    model = SmolVLMForConditionalGeneration(mcfg)
    model.init_weights(std=0.02)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"shapes-vlm: {n_params:,} parameters, {cfg.steps} steps of {cfg.batch_size} scenes (seed {cfg.seed})")
    head = DenseHead(mcfg.text.hidden_size)
    groups = [{"params": list(head.parameters()), "weight_decay": 0.0, "scale": 1.0}]
    for vision in (True, False):
        params = [(n, p) for n, p in model.named_parameters() if n.startswith("vision_model.") == vision]
        scale = cfg.vision_lr_scale if vision else 1.0
        groups.append({"params": [p for n, p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay, "scale": scale})
        groups.append({"params": [p for n, p in params if p.ndim < 2], "weight_decay": 0.0, "scale": scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    pad = backend.token_to_id(SPECIAL["pad_token"])
    history = []
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("train", total=cfg.steps, info="")
        model.train()
        step = 0
        for step, batch in enumerate(batches(processor, cfg, pad)):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg) * group["scale"]
            loss = loss_of(model, batch, head, cfg.dense_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            progress.update(task, advance=1, info=f"loss {loss.item():.4f}")
            minutes = (time.time() - t0) / 60
            last = step + 1 == cfg.steps or (cfg.max_minutes is not None and minutes > cfg.max_minutes)
            if (step + 1) % cfg.eval_every == 0 or last:
                model.eval()
                acc = quick_accuracy(model, processor, cfg.eval_n)
                model.train()
                history.append({"step": step + 1, "loss": round(loss.item(), 5), "minutes": round(minutes, 2), "accuracy": acc})
                progress.console.print(f"step {step + 1}: loss {loss.item():.4f}, held-out accuracy "
                                       + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
            if last:
                break
    if step + 1 < cfg.steps:
        console.print(f"[yellow]stopped at step {step + 1} of {cfg.steps} by --max-minutes {cfg.max_minutes}: "
                      "this model is weaker than a full run and does not reproduce the shipped one[/]")
    model.eval()
    meta = {"train_config": asdict(cfg), "steps_done": step + 1, "minutes": round((time.time() - t0) / 60, 2),
            "parameters": n_params, "history": history, "torch": torch.__version__}
    write_checkpoint(model, backend, Path(out), meta)
    console.print(f"wrote {out} ({meta['minutes']} min); measuring held-out accuracy")
    record_eval(Path(out), eval_sizes)
    return meta


def record_eval(model_dir: Path, sizes: tuple[int, ...] = (100, 500)) -> dict:
    """Held-out accuracy of a saved checkpoint, loaded back as a user would, into ``eval.json``."""
    from ..evaluate import vqa_accuracy
    from ..models import load

    loaded = load(model_dir)
    record = {}
    for n in sizes:
        r = vqa_accuracy(loaded.model, loaded.processor, n)
        record[f"heldout_{n}"] = {"n": r.n, "accuracy": r.accuracy, "by_type": r.by_type}
    (model_dir / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgevlm.zoo.train_shapes", description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    for name in ("seed", "steps", "batch_size", "threads", "eval_every", "eval_n"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--max-minutes", type=float, default=defaults.max_minutes,
                   help="stop early after this many minutes and still save (default: run every step)")
    args = p.parse_args(argv)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size, threads=args.threads,
                      eval_every=args.eval_every, eval_n=args.eval_n, lr=args.lr, max_minutes=args.max_minutes)
    train(cfg, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
