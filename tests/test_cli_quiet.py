"""The command line prints edgevlm's own output only (issue 15): other libraries' warnings, logs and
progress bars go to a log file that the command names once, and ``--verbose`` shows them live.

Each command runs as a user runs it (a subprocess; stdout and stderr both checked) on the shapes VLM
exported to every target by the CLI (conftest ``shapes_every_target``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm.cli import library_log, output

# Lines that only other libraries write: Python warnings, logging records, C++ log prefixes, progress
# bars, tracebacks. edgevlm's own output names backends (executorch, onnxruntime, tvm, coreml) but
# never looks like these.
FOREIGN = re.compile("|".join([
    r"\w+Warning\b",                       # FutureWarning, UserWarning, DeprecationWarning, ...
    r"^\s*warnings\.warn",
    r"\bWARNING\b", r"^(?:INFO|DEBUG|ERROR):\w",  # logging's default format
    r"^[WEIF]\d{4} \d\d:\d\d",              # glog / torch's C++ logging
    r"\[\w+\.(?:cpp|cc|c|h):\d+\]",        # [cpuinfo_utils.cpp:71]
    r"site-packages/",
    r"\d+%\|",                             # tqdm bars
    r"(?:it|ops|passes)/s\]",
    r"Traceback \(most recent call last\)",
    r"torchvision is not installed",
    r"Failed to load .*\.so",
    r"coremltools",
]), re.M)


def foreign_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if FOREIGN.search(line)]


def edgevlm(ctx, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevlm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ctx.root, env=ctx.env, stdin=subprocess.DEVNULL)


def assert_quiet(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = foreign_lines(proc.stdout) + foreign_lines(proc.stderr)
    assert not found, "other libraries' output reached the terminal:\n" + "\n".join(found[:20])


def named_log(proc: subprocess.CompletedProcess) -> Path:
    """The log the command named on stderr (exactly once)."""
    names = re.findall(r"other libraries' messages \(\d+ lines\): (\S+)", proc.stderr)
    assert len(names) == 1, proc.stderr[-2000:]
    return Path(names[0])


def test_the_patterns_recognise_the_lines_users_saw():
    seen = """\
W1207 15:14:40.885000 11430 site-packages/torch/onnx/_internal/exporter/_registration.py:107] torchvision is not installed. Skipping torchvision::nms
Failed to load /x/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library
WARNING:coremltools:Torch version 2.13.0+cpu has not been tested with coremltools.
[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version
/usr/lib/python3.11/copyreg.py:105: FutureWarning: `isinstance(treespec, LeafSpec)` is deprecated
Running MIL frontend_pytorch pipeline:  20%|██        | 1/5 [00:00<00:00, 9.5 passes/s]"""
    assert len(foreign_lines(seen)) == len(seen.splitlines())
    ours = """\
native: answered in 0.4 s
executorch: verifying against the reference on 3 prompts
│ coreml  │ ok     │ -  │ -  │ 0.31 MB │ 12.0 s │ runs only on Apple systems │
other libraries' messages (145 lines): s260.evlm/export.log (--verbose shows them live)"""
    assert foreign_lines(ours) == []


def test_capture_routes_library_output_to_the_log(tmp_path, monkeypatch, capfd):
    """In process: C-level writes and Python prints go to the log; edgevlm's consoles do not. (Python
    warnings and logging records reach the log through sys.stderr: shown by the subprocess tests
    below, since pytest records those itself.)"""
    monkeypatch.setenv("EDGEVLM_LOG_DIR", str(tmp_path))
    with library_log.capture("unit") as log:
        os.write(1, b"c-level stdout line\n")
        os.write(2, b"c-level stderr line\n")
        print("a print from a library")
        output.console.print("edgevlm table row")
        output.err_console.print("edgevlm progress")
        output.out().write("edgevlm text\n")
        note = log.note()
    out, err = capfd.readouterr()
    assert "edgevlm table row" in out and "edgevlm text" in out and "edgevlm progress" in err
    for text in ("c-level", "a print"):
        assert text not in out + err
    logged = (tmp_path / "unit.log").read_text()
    for text in ("c-level stdout line", "c-level stderr line", "a print from a library"):
        assert text in logged
    assert note.startswith("other libraries' messages (3 lines): ") and str(tmp_path / "unit.log") in note
    os.write(1, b"restored\n")
    assert "restored" in capfd.readouterr().out  # the descriptors point where they did before


def test_move_to_keeps_what_was_written(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEVLM_LOG_DIR", str(tmp_path / "logs"))
    with library_log.capture("unit") as log:
        os.write(2, b"before the move\n")
        log.move_to(tmp_path / "bundle.log")
        os.write(2, b"after the move\n")
    assert (tmp_path / "bundle.log").read_text() == "before the move\nafter the move\n"
    assert not (tmp_path / "logs" / "unit.log").exists()


def test_verbose_captures_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEVLM_LOG_DIR", str(tmp_path))
    before = sys.stdout
    with library_log.capture("unit", verbose=True) as log:
        assert sys.stdout is before and log.path is None and log.note() == ""
    assert not list(tmp_path.iterdir())


def test_export_to_every_target_is_quiet_and_keeps_its_log_in_the_bundle(shapes_every_target):
    proc = shapes_every_target.export
    assert_quiet(proc)
    log = named_log(proc)
    assert log == shapes_every_target.bundle / "export.log" or (shapes_every_target.root / log) == \
        shapes_every_target.bundle / "export.log"
    logged = (shapes_every_target.bundle / "export.log").read_text()
    assert foreign_lines(logged), "the export's log holds the libraries' messages"
    report = json.loads((shapes_every_target.bundle / "manifest.json").read_text())["export_report"]
    assert {r["target"]: r["status"] for r in report} == dict.fromkeys(("native", "onnx", "executorch", "coreml", "tvm"), "ok")
    assert "native" in proc.stdout and "onnx" in proc.stdout  # the table


def test_demo_reuses_the_bundle_and_is_quiet(shapes_every_target):
    ctx = shapes_every_target
    proc = edgevlm(ctx, "demo", "--bundle", ctx.bundle, "--image-out", ctx.root / "demo.png")
    assert_quiet(proc)
    assert "reusing" in proc.stderr  # the export above had the demo's settings
    for backend in ("torch", "native", "onnxruntime", "executorch", "tvm"):
        assert backend in proc.stdout
    assert proc.stdout.count("(x)") == 1  # only the table's legend: every backend answered every question right


@pytest.mark.parametrize("backend", ["native", "onnxruntime", "executorch", "tvm", "torch"])
def test_run_is_quiet_on_every_backend(shapes_every_target, backend):
    ctx = shapes_every_target
    image = ctx.root / "picture.png"
    if not image.exists():
        from PIL import Image

        from edgevlm.zoo import shapes_data

        Image.fromarray(shapes_data.render(shapes_data.make_scene(shapes_data.HELDOUT_BASE + 2))).save(image)
    proc = edgevlm(ctx, "run", ctx.bundle, "--backend", backend, "--prompt", "What color is the circle?",
                   "--image", image, "--max-new-tokens", "8")
    assert_quiet(proc)
    assert proc.stdout.strip()


def test_bench_is_quiet(shapes_every_target):
    ctx = shapes_every_target
    proc = edgevlm(ctx, "bench", ctx.bundle, "--backends", "native,onnxruntime,executorch", "--prompt-tokens", "96",
                   "--gen", "4", "--repeat", "1", "--warmup", "0", "--chunk-sizes", "none", "--out", ctx.root / "bench")
    assert_quiet(proc)
    assert (ctx.root / "bench" / "results.json").is_file()


def test_verbose_shows_the_libraries_live_and_the_log_keeps_them(shapes_every_target):
    """ExecuTorch's runtime logs its CPU probing in C++ when a program loads; by default that goes
    to the log, with --verbose to the terminal."""
    ctx = shapes_every_target
    args = ("run", ctx.bundle, "--backend", "executorch", "--prompt", "How many shapes are there?", "--no-chat",
            "--max-new-tokens", "2")
    quiet = edgevlm(ctx, *args)
    assert_quiet(quiet)
    log = named_log(quiet)
    logged = log.read_text()
    assert foreign_lines(logged)
    loud = edgevlm(ctx, *args, "--verbose")
    assert loud.returncode == 0
    assert foreign_lines(loud.stderr) and "other libraries' messages" not in loud.stderr
