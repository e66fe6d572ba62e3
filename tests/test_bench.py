"""``edgevlm bench``: the results document, CSV, HTML report and plots of a real run on a tiny VLM
bundle; the schema; prompts of exact token counts; skipped backends; bad input (one line, exit 2);
the adb command lines and the parsing of a recorded ``edgevlm-bench`` output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
from dataclasses import fields
from pathlib import Path

import pytest

from tiny_models import one_line_error
from edgevlm.bench import device, report, runner
from edgevlm.bench.probe import memory_bandwidth
from edgevlm.bench.prompts import fit_text
from edgevlm.bench.schema import SCHEMA_VERSION, SUMMARY_FIELDS, ResultRow, Summary, csv_columns, flatten
from edgevlm.errors import InputError

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "edgevlm_bench_shapes.json"  # host edgevlm-bench on the shapes-vlm bundle (see its README)
PROMPTS, GEN, REPEAT = (224, 288), 6, 2  # the tiny SmolVLM's image turn alone is 200 tokens


def edgevlm(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevlm", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def bundle(tiny_vlm_bundle) -> Path:
    return tiny_vlm_bundle


@pytest.fixture(scope="module")
def run(bundle, tmp_path_factory) -> tuple[dict, Path]:
    """One real benchmark: native and onnxruntime measured, executorch and tvm skipped (not exported)."""
    out = tmp_path_factory.mktemp("bench_out")
    proc = edgevlm("bench", bundle, "--backends", "native,onnxruntime,executorch,tvm", "--prompt-tokens",
                   ",".join(map(str, PROMPTS)), "--gen", GEN, "--repeat", REPEAT, "--threads", 2, "--chunk-sizes", 32,
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), out


def test_document_schema(run):
    doc, _ = run
    assert doc["schema_version"] == SCHEMA_VERSION and doc["tool"] == "edgevlm bench"
    assert doc["bundle_name"] == "tiny"
    assert set(doc) >= {"created", "bundle", "model", "settings", "machine", "compare", "sizes", "results", "chunk_sweep"}
    assert set(doc["sizes"]) == {"native", "onnxruntime"} and doc["sizes"]["native"]["decoder_bytes"] > 0
    assert doc["machine"]["memory_bandwidth_gbs"] > 0 and doc["machine"]["bandwidth_probe"]["threads"] == 2
    assert doc["settings"]["image"], "a VLM bundle is measured with a (generated) picture"
    names = {f.name for f in fields(ResultRow)}
    for row in doc["results"] + doc["chunk_sweep"]:
        assert set(row) == names
        for k in SUMMARY_FIELDS:
            assert set(row[k]) == {"median", "min", "max", "n"}


def test_skipped_backends_say_why(run):
    doc, _ = run
    skipped = {r["backend"]: r["skipped"] for r in doc["results"] if r["skipped"]}
    assert set(skipped) == {"executorch", "tvm"}
    assert all("not in the bundle" in why for why in skipped.values())


def test_numbers_are_positive_and_consistent(run):
    doc, _ = run
    measured = [ResultRow.from_dict(r) for r in doc["results"] if not r["skipped"]]
    assert sorted({r.backend for r in measured}) == ["native", "onnxruntime"]
    assert sorted(r.requested_prompt_tokens for r in measured) == sorted(PROMPTS * 2)
    for r in measured:
        assert r.prompt_tokens == r.requested_prompt_tokens == r.decode_depth, r
        assert r.gen_tokens == GEN and r.image and r.image_tiles >= 1
        for name in SUMMARY_FIELDS:
            s = getattr(r, name)
            assert s.n >= REPEAT and 0 < s.min <= s.median <= s.max, (r.backend, name, s)
        for v in (r.load_ms, r.peak_rss_mb, r.model_bytes, r.decode_bytes_per_token, r.decode_bandwidth_gbs,
                  r.bandwidth_fraction):
            assert v > 0, r
        parts = r.preprocess_ms.median + r.vision_encode_ms.median + r.prefill_ms.median
        assert abs(r.ttft_ms.median - parts) <= 0.05 * r.ttft_ms.median, (r.backend, r.ttft_ms, parts)
        # each run's tok/s is prompt / its prefill time, so the median tok/s lies within the runs' range
        # (the median of a ratio is not the ratio of medians: on a busy machine they differ)
        lo, hi = r.prompt_tokens / (r.prefill_ms.max / 1e3), r.prompt_tokens / (r.prefill_ms.min / 1e3)
        assert lo * 0.999 <= r.prefill_tps.median <= hi * 1.001, (r.prefill_tps, r.prefill_ms)
        assert r.decode_bandwidth_gbs == pytest.approx(r.decode_bytes_per_token * r.decode_tps.median / 1e9, rel=1e-3,
                                                       abs=1e-4)
        assert r.peak_rss_mb >= r.baseline_rss_mb > 0
    native = [r for r in measured if r.backend == "native"]
    assert all(r.chunk_size == 16 and r.chunk_source == "bundle" for r in native)
    # a deeper cache is more bytes per decoded token
    assert native[1].decode_bytes_per_token > native[0].decode_bytes_per_token


def test_native_chunk_sweep(run):
    doc, _ = run
    sweep = [ResultRow.from_dict(r) for r in doc["chunk_sweep"]]
    assert {(r.backend, r.chunk_size, r.chunk_source) for r in sweep} == {("native", 32, "load")}
    assert sorted(r.prompt_tokens for r in sweep) == list(PROMPTS)
    assert all(r.prefill_tps.median > 0 for r in sweep)


def test_files_csv_html_and_plots(run):
    doc, out = run
    assert json.loads((out / "results.json").read_text()) == doc
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == csv_columns()
    assert len(rows) == len(doc["results"]) + len(doc["chunk_sweep"])
    assert {r["backend"] for r in rows} == {"native", "onnxruntime", "executorch", "tvm"}
    for name in report.PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(report.PLOTS)
    assert "fixed chunk" in page


def test_table_lists_backends_and_skips(run):
    doc, _ = run
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(report.table(doc))
    text = console.export_text()
    assert "native" in text and "onnxruntime" in text
    assert "executorch skipped: not in the bundle" in text


@pytest.mark.parametrize("args, words", [
    (("/no/such.evlm",), ("no such bundle",)),
    (("{bundle}", "--backends", "native,cuda"), ("unknown backend cuda",)),
    (("{bundle}", "--prompt-tokens", "500", "--gen", "64"), ("context of 512",)),
    (("{bundle}", "--prompt-tokens", "12,x"), ("--prompt-tokens",)),
    (("{bundle}", "--prompt-tokens", "224", "--image", "/no/such.png"), ("no such file",)),
    (("{bundle}", "--device", "usb:1234"), ("adb:SERIAL",)),
])
def test_bad_input_is_one_line(bundle, args, words, capsys):
    from edgevlm.cli import main

    code = main(["bench", *(a.format(bundle=bundle) for a in args)])  # in-process: no interpreter start per case
    err = capsys.readouterr().err
    one_line_error(subprocess.CompletedProcess([], code, "", err), *words)


def test_a_directory_that_is_not_a_bundle(tmp_path):
    one_line_error(edgevlm("bench", tmp_path), "not a bundle")  # the real command: exit code 2, no traceback


def test_schema_round_trip_and_flatten():
    row = ResultRow("native", 128, prompt_tokens=128, prefill_ms=Summary.of([3, 1, 2]), decode_bytes_per_token=10**6,
                    decode_tps=Summary.of([10.0]))
    assert row.prefill_ms == Summary(2.0, 1.0, 3.0, 3)
    assert ResultRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    assert ResultRow.from_dict({"backend": "llama.cpp", "ttft_ms": 5.0, "unknown": 1}).ttft_ms == Summary(5, 5, 5, 1)
    flat = flatten(row)
    assert flat["prefill_ms_median"] == 2.0 and "prefill_ms" not in flat and list(flat) == csv_columns()
    row.with_bandwidth(2.0)
    assert row.decode_bandwidth_gbs == pytest.approx(0.01) and row.bandwidth_fraction == pytest.approx(0.005)


def test_prompt_fitting_hits_exact_counts():
    count = lambda text: 7 + len(text) // 3  # a template of 7 tokens, a token per 3 characters
    for n in (7, 8, 50, 513):
        text, have = fit_text(count, n)
        assert have == n == count(text)
    with pytest.raises(InputError, match="already has 7 tokens"):
        fit_text(count, 6)


def test_prompts_through_the_real_tokenizer(bundle):
    from edgevlm.bench.prompts import build_prompts, prompt_counter
    from edgevlm.models import load_processor

    _, processor = load_processor(bundle / "weights")
    count = prompt_counter(processor)
    for p in build_prompts(processor, [20, 64, 200]):
        assert p.tokens == p.requested == count(p.text)


def test_probe_reports_bandwidth():
    probe = memory_bandwidth(threads=2, size_mib=8, repeat=1)
    assert probe["read_gbs"] > 0 and probe["copy_gbs"] > 0 and probe["threads"] == 2
    assert probe["memory_bandwidth_gbs"] == max(probe["read_gbs"], probe["copy_gbs"])


def test_parse_int_lists_and_backends():
    assert runner.parse_int_list("128, 512", "--x") == [128, 512]
    for bad in ("", "0", "a,b", "-4"):
        with pytest.raises(InputError):
            runner.parse_int_list(bad, "--x")
    assert runner.parse_backends("tvm,native,tvm") == ["tvm", "native"]


def test_compare_reports_missing_peers(monkeypatch):
    from edgevlm.cli import bench as cli_bench

    import edgevlm.bench

    # as if the module were not there, even when an earlier test imported it
    monkeypatch.setitem(sys.modules, "edgevlm.bench.peers", None)
    monkeypatch.delattr(edgevlm.bench, "peers", raising=False)
    doc = {"machine": {"memory_bandwidth_gbs": 10.0}}
    settings = runner.BenchSettings(bundle=Path("x.evlm"))
    cli_bench._compare(doc, settings, runner.Progress())
    assert doc["compare"]["requested"] and not doc["compare"]["available"]


def test_compare_rows_from_peers(monkeypatch):
    from edgevlm.cli import bench as cli_bench

    seen = {}

    def run_peers(model, prompt_tokens, gen, threads, repeat, progress):
        seen.update(model=model, prompt_tokens=prompt_tokens, gen=gen, threads=threads, repeat=repeat)
        progress("llama.cpp: 128 tokens")
        return [ResultRow("llama.cpp", 128, prompt_tokens=128, decode_tps=Summary.of([20.0]),
                          decode_bytes_per_token=10**8).to_dict(),
                {"backend": "onnxruntime-genai", "requested_prompt_tokens": 128, "skipped": "package not installed"}]

    monkeypatch.setitem(sys.modules, "edgevlm.bench.peers", types.SimpleNamespace(run_peers=run_peers))
    monkeypatch.setattr(sys.modules["edgevlm.bench"], "peers", sys.modules["edgevlm.bench.peers"], raising=False)
    doc = {"machine": {"memory_bandwidth_gbs": 4.0}, "settings": {"threads": 2, "gen": 8, "repeat": 1}}
    settings = runner.BenchSettings(bundle=Path("x.evlm"), prompt_tokens=[128], gen=8, threads=2, repeat=1)
    cli_bench._compare(doc, settings, runner.Progress())
    assert seen == {"model": Path("x.evlm"), "prompt_tokens": [128], "gen": 8, "threads": 2, "repeat": 1}
    assert doc["compare"] == {"requested": True, "available": True, "reason": "missing: onnxruntime-genai"}
    llama = ResultRow.from_dict(doc["compare_results"][0])
    assert llama.decode_bandwidth_gbs == pytest.approx(2.0) and llama.bandwidth_fraction == pytest.approx(0.5)


# --- a phone over adb -------------------------------------------------------------------------


def test_device_spec():
    assert device.parse_device("adb:R58M12ABCDE") == "R58M12ABCDE"
    for bad in ("R58M12ABCDE", "adb:", "ssh:host", "adb:a b"):
        with pytest.raises(InputError):
            device.parse_device(bad)


def test_adb_command_lines():
    cmds = device.adb_commands("R58M", Path("/w/shapes.evlm"), Path("build/arm/edgevlm-bench"), [128, 512], 64, 4, 5,
                               image=Path("/w/pic one.png"))
    d = device.REMOTE_DIR
    assert cmds == [
        ["adb", "-s", "R58M", "shell", f"rm -rf {d}/shapes.evlm && mkdir -p {d}"],
        ["adb", "-s", "R58M", "push", "/w/shapes.evlm", f"{d}/"],
        ["adb", "-s", "R58M", "push", "build/arm/edgevlm-bench", f"{d}/edgevlm-bench"],
        ["adb", "-s", "R58M", "push", "/w/pic one.png", f"{d}/pic one.png"],
        ["adb", "-s", "R58M", "shell", f"chmod 755 {d}/edgevlm-bench"],
        ["adb", "-s", "R58M", "shell", f"{d}/edgevlm-bench {d}/shapes.evlm --prompt-tokens 128,512 --gen 64 "
                                       f"--threads 4 --repeat 5 --warmup 1 --image '{d}/pic one.png'"],
    ]
    plain = device.adb_commands("X", Path("m.evlm"), Path("b"), [32], 8, 1, 1, warmup=0, chunk=16)
    assert plain[-1][-1].endswith("--gen 8 --threads 1 --repeat 1 --warmup 0 --chunk 16") and len(plain) == 5


def test_recorded_edgevlm_bench_output_parses():
    data = json.loads(RECORDED.read_text())
    rows = device.parse_native_bench(data, "adb:R58M")
    text = [r for r in rows if not r.image]
    assert [r.prompt_tokens for r in text] == [r["prompt_tokens"] for r in data["results"]]
    for r, src in zip(text, data["results"]):
        assert r.device == "adb:R58M" and r.backend == "native" and r.runtime.startswith("edgevlm-native")
        assert r.decode_depth == src["decode_depth"] and r.gen_tokens == data["gen"]
        assert r.decode_tps.median == src["decode_tps"]["median"] > 0
        assert r.ttft_ms.median == src["ttft_ms"]["median"] > 0 and r.prefill_tps.n == data["repeat"]
        assert r.chunk_size == data["chunk_size"] and r.load_ms == data["load_ms"] > 0
    image = [r for r in rows if r.image]
    assert len(image) == 1 and image[0].image_tiles == data["image"]["tiles"]
    im = image[0]
    parts = im.preprocess_ms.median + im.vision_encode_ms.median + im.prefill_ms.median
    assert abs(im.ttft_ms.median - parts) <= 0.05 * im.ttft_ms.median
    assert im.vision_encode_ms.median > 0 and im.prefill_tps.median > 0


def test_device_document_from_recorded_output(tmp_path):
    from edgevlm.cli.bench import device_document

    data = json.loads(RECORDED.read_text())
    bundle = tmp_path / "shapes.evlm"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "weights" / "model.safetensors").write_bytes(_tiny_safetensors())
    manifest = {"family": "smolvlm", "chunk_size": data["chunk_size"], "max_context": data["max_context"],
                "text_config": {"num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 8, "hidden_size": 16,
                                "num_attention_heads": 2},
                "targets": {"native": {"files": {"weights": "weights/model.safetensors"}}}}
    settings = runner.BenchSettings(bundle=bundle, prompt_tokens=[r["prompt_tokens"] for r in data["results"]],
                                    gen=data["gen"], threads=data["threads"], repeat=data["repeat"])
    doc = device_document(data, settings, manifest, "adb:R58M")
    assert doc["settings"]["device"] == "adb:R58M" and doc["schema_version"] == SCHEMA_VERSION
    row = ResultRow.from_dict(doc["results"][0])
    kv = 2 * 2 * 1 * 8 * row.decode_depth * 2  # K and V, layers, kv heads, head dim, depth, fp16
    assert row.decode_bytes_per_token == 64 + kv  # the language-model tensor (the vision one is left out)
    assert row.decode_bandwidth_gbs > 0 and row.bandwidth_fraction == 0  # no probe on the device
    report.write_all(doc, tmp_path / "out")
    assert (tmp_path / "out" / "report.html").is_file()


FAKE_ADB = r"""#!/bin/bash
# adb stand-in: "adb -s SERIAL push SRC DST" copies, "adb -s SERIAL shell CMD" runs CMD here, with the
# device folder mapped to $FAKE_DEVICE_ROOT
[ "$1" = "-s" ] && [ -n "$2" ] || exit 9
echo "$2" >> "$FAKE_DEVICE_ROOT.serials"
op=$3; shift 3
map() { local s="$1"; echo "${s//\/data\/local\/tmp\/edgevlm/$FAKE_DEVICE_ROOT}"; }
case $op in
  push) cp -r "$1" "$(map "$2")" ;;
  shell) eval "$(map "$1")" ;;
  *) exit 9 ;;
esac
"""


def test_device_run_end_to_end_with_a_stand_in_adb(bundle, tmp_path):
    """The whole --device path with an adb that runs the host's edgevlm-bench in a local folder."""
    import os

    from edgevlm.sdk import native_tool

    exe = native_tool("edgevlm-bench")
    if exe is None:
        pytest.skip("edgevlm-bench is not built")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DEVICE_ROOT": str(tmp_path / "device")}
    proc = subprocess.run([sys.executable, "-m", "edgevlm", "bench", str(bundle), "--device", "adb:FAKE1",
                           "--binary", str(exe), "--prompt-tokens", "32,64", "--gen", "4", "--repeat", "1",
                           "--out", str(tmp_path / "out"), "--json"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set((tmp_path / "device.serials").read_text().split()) == {"FAKE1"}
    assert (tmp_path / "device" / bundle.name / "manifest.json").is_file()
    rows = [ResultRow.from_dict(r) for r in doc["results"]]
    assert {r.device for r in rows} == {"adb:FAKE1"}
    text = [r for r in rows if not r.image]
    assert [r.prompt_tokens for r in text] == [32, 64]
    assert all(r.decode_tps.median > 0 and r.ttft_ms.median > 0 and r.decode_bytes_per_token > 0 for r in text)
    image = [r for r in rows if r.image]  # a VLM: the generated picture went to the device too
    assert len(image) == 1 and image[0].vision_encode_ms.median > 0 and image[0].image_tiles >= 1
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "results.csv").is_file()


def _tiny_safetensors() -> bytes:
    header = {"language_model.layers.0.w": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]},
              "vision_model.w": {"dtype": "U8", "shape": [32], "data_offsets": [64, 96]}}
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + bytes(96)
