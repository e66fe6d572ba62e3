"""Image decoding speed: the C++ runtime's own decoders against Pillow, side by side.

    python benchmarks/image_decode.py [--rounds 7] [--per-round 5] [FILE ...]

Default files: the 1280x720 photo ../shared/data/images/cat_720p.jpg and the same pixels saved as a
PNG by Pillow (compress level 6, adaptive filters). Per round, interleaved: the C++ decoder
(runtimes/tests/driver_image.cpp ``bench``: decode_image_memory on bytes already in memory, RGB out)
then Pillow the same number of times (``Image.open`` + ``convert("RGB")`` from bytes in memory, and
the Python loader ``load_image``, which adds the array copy). Prints per-decode milliseconds of
wall time and of the decoding thread's CPU time (steadier on a shared machine): median and min-max
over all decodes, with the load average before and after and the CPU model.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from native_build import build_native  # noqa: E402

from edgevlm.processing.image import load_image  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"


def time_pil(data: bytes, n: int, loader: bool) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.thread_time()
        if loader:
            load_image(data)
        else:
            with Image.open(io.BytesIO(data)) as im:
                im.convert("RGB")
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
    return wall, cpu


def summary(ms: list[float]) -> str:
    return f"{statistics.median(ms):7.2f}  ({min(ms):.2f}-{max(ms):.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=5)
    args = p.parse_args()
    driver = build_native() / "driver_image"
    with tempfile.TemporaryDirectory() as tmp:
        files = args.files
        if not files:
            photo = ROOT.parent / "shared" / "data" / "images" / "cat_720p.jpg"
            png = Path(tmp) / "cat_720p.png"
            Image.open(photo).convert("RGB").save(png)
            files = [photo, png]
        load_before = os.getloadavg()
        rows = []
        for f in files:
            data = f.read_bytes()
            t = {k: ([], []) for k in ("cpp", "pil", "loader")}  # (wall, cpu) per decode
            for _ in range(args.rounds):
                proc = subprocess.run([str(driver), "bench", str(f), str(args.per_round)], capture_output=True,
                                      text=True, check=True)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                t["cpp"][0].extend(res["ms"]), t["cpp"][1].extend(res["cpu_ms"])
                for key, loader in (("pil", False), ("loader", True)):
                    wall, cpu = time_pil(data, args.per_round, loader)
                    t[key][0].extend(wall), t[key][1].extend(cpu)
            with Image.open(f) as im:
                size = f"{im.width}x{im.height} {im.format}"
            rows.append((f.name, size, t))
        load_after = os.getloadavg()
    print(f"CPU: {cpu_model()}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{args.rounds} rounds x {args.per_round} decodes, interleaved")
    print(f"{'file':<16} {'image':<16} {'time':<5} {'C++ ms median (min-max)':<26} {'Pillow open+convert':<26} load_image")
    for name, size, t in rows:
        for i, kind in enumerate(("wall", "cpu")):
            print(f"{name:<16} {size:<16} {kind:<5} {summary(t['cpp'][i]):<26} {summary(t['pil'][i]):<26} "
                  f"{summary(t['loader'][i])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
