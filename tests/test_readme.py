"""The README's two commands are the ones CI runs, and its examples run as written.

Its command-line and SDK examples run in a scratch directory laid out like the repository root
(``../shared`` beside it, ``edgevlm-demo.png`` drawn as ``edgevlm demo`` draws it). The one
expensive line, the export to all five targets, runs as written in a slow test; the default run
exports the same bundle with the targets that the later lines use (native, onnx).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from edgevlm.zoo import shapes_data

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ALL_TARGETS = "native,onnx,executorch,coreml,tvm"


def blocks(lang: str) -> list[str]:
    return [b.strip() for b in re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)]


def block_with(lang: str, needle: str) -> str:
    found = [b for b in blocks(lang) if needle in b]
    assert len(found) == 1, f"expected one {lang} block containing {needle!r}"
    return found[0]


def shell(line: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"README line failed ({proc.returncode}): {line}\n{proc.stderr[-3000:]}"
    return proc


def test_ci_runs_the_readme_commands():
    readme = blocks("bash")
    ci = (ROOT / ".ci" / "run").read_text()
    setup, tests = readme[0], readme[1]
    contributors = block_with("bash", "apt-get install")
    assert setup.count("\n") == 0 and tests.count("\n") == 0 and contributors.count("\n") == 0
    assert setup in ci.splitlines()
    assert re.search(rf"^{re.escape(tests)}$", ci, flags=re.M)
    assert contributors in ci.splitlines()
    # nothing else is installed: the only install commands are those of these three lines
    installs = [line for line in ci.splitlines() if re.search(r"\b(pip|apt-get) install\b", line)]
    assert installs == [setup, contributors]
    assert ci.index(setup) < ci.index(tests) < ci.index(contributors)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("readme")
    (root / "shared").symlink_to(data_dir.parent)
    repo = root / "repo"
    repo.mkdir()
    picture = shapes_data.render(shapes_data.make_scene(shapes_data.HELDOUT_BASE + 2))  # edgevlm demo's picture
    Image.fromarray(picture).save(repo / "edgevlm-demo.png")
    return repo


@pytest.fixture(scope="module")
def export_lines() -> list[str]:
    lines = block_with("bash", "edgevlm export shapes-vlm").splitlines()
    assert lines[0].startswith("edgevlm export shapes-vlm -o shapes.evlm") and ALL_TARGETS in lines[0]
    return lines


@pytest.fixture(scope="module")
def shapes_bundle(workdir, export_lines) -> Path:
    shell(export_lines[0].replace(ALL_TARGETS, "native,onnx"), workdir)
    return workdir / "shapes.evlm"


def test_command_line_examples_run(workdir):
    lines = block_with("bash", "edgevlm info shapes-vlm").splitlines()
    outputs = [shell(line, workdir) for line in lines]
    assert "What color is the circle?" not in outputs[1].stdout and outputs[1].stdout.strip()  # an answer
    assert (workdir / "stories260K" / "model.safetensors").is_file()
    assert json.loads(outputs[-1].stdout)["accuracy"] >= 0.9  # the 4-bit model still answers


def test_export_and_runtime_examples_run(workdir, shapes_bundle, export_lines):
    outputs = [shell(line, workdir) for line in export_lines[1:]]
    assert "native" in outputs[0].stdout and "onnx" in outputs[0].stdout  # inspect's table
    native, ort = outputs[1].stdout.strip(), outputs[2].stdout.strip()
    assert native and ort
    bench = json.loads(outputs[-2].stdout)  # edgevlm-bench's document
    assert bench["gen"] == 32 and bench["results"]
    assert any(r.get("decode_tps", {}).get("median", 0) > 0 for r in bench["results"])
    for name in ("results.json", "results.csv", "report.html"):
        assert (workdir / "bench-shapes" / name).is_file()


def test_sdk_examples_run(workdir, shapes_bundle, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    for code in blocks("python"):
        if "OpenAI(" not in code:  # the server's client example: test_server_example_runs
            exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "TTFT" in out and "tok/s" in out


def test_server_example_runs(workdir, shapes_bundle, monkeypatch, capsys):
    """The server's lines, on a free port instead of 8080 (curl where installed), and its client example."""
    import shutil
    import socket
    import sys
    import time
    import urllib.request

    pytest.importorskip("openai")
    serve, curl = block_with("bash", "edgevlm serve").splitlines()
    client = block_with("python", "OpenAI(")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = serve.split("#")[0].replace("8080", port).split()
    assert command[:2] == ["edgevlm", "serve"]
    server = subprocess.Popen([sys.executable, "-m", "edgevlm", *command[1:]], cwd=workdir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() - t0 < 120, "the server did not start"
                time.sleep(0.2)
        if shutil.which("curl"):
            answer = json.loads(shell(curl.replace("8080", port), workdir).stdout)
            assert answer["choices"][0]["message"]["content"].strip()
        monkeypatch.chdir(workdir)
        exec(compile(client.replace("8080", port), "README.md", "exec"), {})
        out = capsys.readouterr().out
        assert "prompt_tokens=" in out and "CompletionUsage" in out
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()


@pytest.mark.slow
def test_export_to_every_target_as_written(tmp_path, export_lines):
    shell(export_lines[0], tmp_path, timeout=3600)
    manifest = json.loads((tmp_path / "shapes.evlm" / "manifest.json").read_text())
    report = {r["target"]: r for r in manifest["export_report"]}
    assert set(report) == set(ALL_TARGETS.split(","))
    assert all(r["status"] == "ok" for r in report.values()), {t: r["message"] for t, r in report.items()}
