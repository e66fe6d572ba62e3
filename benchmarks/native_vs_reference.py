"""Task quality of the C++ runtime against the PyTorch reference of the same bundles.

    python benchmarks/native_vs_reference.py SHAPES.evlm STORIES.evlm [N]

SHAPES.evlm: `edgevlm export shapes-vlm -o SHAPES.evlm --targets native --chunk 32 --max-context 512`;
STORIES.evlm: `edgevlm export stories260k -o STORIES.evlm --targets native --chunk 16 --max-context 256`.
Prints held-out shapes accuracy on N questions (default 200) on both backends and how many greedy
answers are identical, then stories260K perplexity over the first 4096 tokens of the TinyStories
validation excerpt, teacher-forced one token per step, in windows of the bundle's context.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np

import edgevlm
from edgevlm import _native
from edgevlm.zoo import shapes_data

shapes, stories = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
res = {}
for backend in ("native", "torch"):
    s = edgevlm.load(shapes, backend=backend)
    right = agree = 0
    t0 = time.time()
    for scene, qa in shapes_data.heldout(n, 0):
        r = s.generate(qa.question, [shapes_data.render(scene)], max_new_tokens=48)
        right += shapes_data.normalize_answer(r.text) == shapes_data.normalize_answer(qa.answer)
        res.setdefault(backend + "_tokens", []).append(r.tokens)
    res[backend] = right / n
    print(backend, "accuracy", right / n, f"{time.time()-t0:.1f}s", flush=True)
same = sum(a == b for a, b in zip(res["native_tokens"], res["torch_tokens"]))
print(f"identical greedy answers: {same}/{n}")

# perplexity: teacher-forced, one row per step (chunk 1), over the first 4096 tokens of the valid excerpt
text = (DATA / "text" / "tinystories_valid_excerpt.txt").read_text()
m = _native.Model.load(stories, chunk_size=1)
ids = m.tokenize(text, True)[:4096]
def nll(next_logits):
    total = 0.0
    for i in range(len(ids) - 1):
        l = next_logits(i).astype(np.float64)
        total += (np.log(np.exp(l - l.max()).sum()) + l.max()) - l[ids[i + 1]]
    return total / (len(ids) - 1)
sess = _native.Session(m)
ctx = m.max_context
def native_logits(i):
    if i % ctx == 0 and i > 0:
        sess.reset()
    sess.add_tokens([ids[i]])
    return sess.logits
# the torch reference with the same context resets
from edgevlm.engine import TorchEngine  # noqa: E402
from edgevlm.models import load  # noqa: E402

ref = load(f"{stories}/weights")
eng = TorchEngine(ref.model, ctx, 1)
def torch_logits(i):
    if i % ctx == 0:
        eng.reset()
    e = eng.embed(np.asarray([ids[i]]))
    return eng.prefill(e, np.asarray([i % ctx]))
a, b = nll(native_logits), nll(torch_logits)
print(f"perplexity over {len(ids)} tokens (context {ctx}, reset at each window): native {math.exp(a):.4f}, torch {math.exp(b):.4f}, diff {100*(math.exp(a)/math.exp(b)-1):+.3f}%")
