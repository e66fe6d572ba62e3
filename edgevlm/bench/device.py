"""``edgevlm bench --device adb:SERIAL``: the native runtime on a phone or board, over adb.

The host pushes the bundle and the aarch64 ``edgevlm-bench`` program (cross-built, see
docs/BENCHMARK.md) to ``/data/local/tmp/edgevlm``, runs it there with ``adb shell`` and reads the
one JSON object it prints. :func:`adb_commands` builds the command lines (a pure function, tested);
:func:`parse_native_bench` turns that JSON (from a phone, or from the host's own ``edgevlm-bench``)
into result rows of :mod:`edgevlm.bench.schema`.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from ..errors import EdgeVLMError, InputError
from .schema import ResultRow, Summary

REMOTE_DIR = "/data/local/tmp/edgevlm"
DEFAULT_BINARY = Path("build/arm/edgevlm-bench")  # cmake -S runtimes -B build/arm (aarch64 toolchain)


def parse_device(spec: str) -> str:
    """The serial of ``adb:SERIAL``; :class:`InputError` for anything else."""
    kind, _, serial = spec.partition(":")
    if kind != "adb" or not serial or any(c.isspace() for c in serial):
        raise InputError(f"--device {spec!r}: expected adb:SERIAL (the serial `adb devices` lists)")
    return serial


def adb_commands(serial: str, bundle: Path, binary: Path, prompt_tokens: list[int], gen: int, threads: int,
                 repeat: int, warmup: int = 1, image: Path | None = None, chunk: int | None = None,
                 remote_dir: str = REMOTE_DIR) -> list[list[str]]:
    """The adb command lines, in order: make the folder, push the bundle, the program (and the image),
    make the program executable, run it. The last one prints the benchmark's JSON on stdout."""
    adb = ["adb", "-s", serial]
    bundle, binary = Path(bundle), Path(binary)
    remote_bundle = f"{remote_dir}/{bundle.name}"
    remote_exe = f"{remote_dir}/edgevlm-bench"
    run = [remote_exe, remote_bundle, "--prompt-tokens", ",".join(str(n) for n in prompt_tokens), "--gen", str(gen),
           "--threads", str(threads), "--repeat", str(repeat), "--warmup", str(warmup)]
    cmds = [adb + ["shell", f"rm -rf {shlex.quote(remote_bundle)} && mkdir -p {shlex.quote(remote_dir)}"],
            adb + ["push", str(bundle), f"{remote_dir}/"],
            adb + ["push", str(binary), remote_exe]]
    if image is not None:
        remote_image = f"{remote_dir}/{Path(image).name}"
        cmds.append(adb + ["push", str(image), remote_image])
        run += ["--image", remote_image]
    if chunk:
        run += ["--chunk", str(chunk)]
    cmds.append(adb + ["shell", f"chmod 755 {shlex.quote(remote_exe)}"])
    cmds.append(adb + ["shell", " ".join(shlex.quote(a) for a in run)])
    return cmds


def run_commands(cmds: list[list[str]], progress=None) -> str:
    """Run the commands in order; the last one's stdout. A failure raises :class:`EdgeVLMError`."""
    out = ""
    for cmd in cmds:
        if progress is not None:
            progress(" ".join(cmd[3:5]))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            raise InputError("adb not found: install Android platform-tools and put adb on PATH") from None
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-1]
            raise EdgeVLMError(f"{shlex.join(cmd)}: {why}")
        out = proc.stdout
    return out


def _summary(d) -> Summary:
    return Summary.from_dict(d)


def parse_native_bench(data: dict, device: str = "host") -> list[ResultRow]:
    """Rows from ``edgevlm-bench``'s JSON: one per prompt length, plus one for the image turn (if any).

    The program's text prompts are token ids (no template, no image), so their preprocess and
    vision times are 0; its image turn ("Describe the image." with the picture, through the
    template) has them, and no decode.
    """
    if not isinstance(data, dict) or "results" not in data:
        raise EdgeVLMError("edgevlm-bench output: expected a JSON object with 'results'")
    common = dict(backend="native", runtime=data.get("runtime", "edgevlm-native"), device=device,
                  threads=int(data.get("threads", 0)), chunk_size=int(data.get("chunk_size", 0)), chunk_source="bundle",
                  load_ms=float(data.get("load_ms", 0.0)), peak_rss_mb=float(data.get("peak_rss_mb", 0.0)),
                  model_bytes=int(data.get("model_bytes", 0)))
    rows = []
    for r in data["results"]:
        n = int(r["prompt_tokens"])
        rows.append(ResultRow(
            **common, requested_prompt_tokens=n, prompt_tokens=n, decode_depth=int(r.get("decode_depth", n)),
            gen_tokens=int(data.get("gen", 0)), prefill_ms=_summary(r.get("prefill_ms")),
            prefill_tps=_summary(r.get("prefill_tps")), prefill_chunk_ms=_summary(r.get("prefill_chunk_ms")),
            ttft_ms=_summary(r.get("ttft_ms")), decode_tps=_summary(r.get("decode_tps")),
            preprocess_ms=Summary(n=_summary(r.get("ttft_ms")).n),
            vision_encode_ms=Summary(n=_summary(r.get("ttft_ms")).n)))
    image = data.get("image")
    if isinstance(image, dict):
        n = int(image.get("prompt_tokens", 0))
        pf = _summary(image.get("prefill_ms"))
        rows.append(ResultRow(
            **common, requested_prompt_tokens=n, prompt_tokens=n, decode_depth=n, gen_tokens=0, image=True,
            image_tiles=int(image.get("tiles", 0)), preprocess_ms=_summary(image.get("preprocess_ms")),
            vision_encode_ms=_summary(image.get("vision_encode_ms")), prefill_ms=pf,
            prefill_tps=Summary(*(n / (v / 1e3) if v > 0 else 0.0 for v in (pf.median, pf.max, pf.min)), pf.n),
            ttft_ms=_summary(image.get("ttft_ms"))))
    return rows


__all__ = ["DEFAULT_BINARY", "REMOTE_DIR", "adb_commands", "parse_device", "parse_native_bench", "run_commands"]
