"""The benchmark's outputs: a rich table, ``results.json``, ``results.csv``, ``report.html`` with plots.

Plots (matplotlib, PNG files beside the report and embedded in it):

- ``ttft_breakdown.png``: time to first token per backend and prompt length as stacked bars of
  preprocess + vision encode + prefill (medians);
- ``decode_vs_depth.png``: decode tok/s against the depth it was measured at (the prompt length),
  one line per backend, min-max as error bars;
- ``prefill_vs_chunk.png``: prefill tok/s against the prefill chunk size. The native runtime takes
  the chunk at load time, so it gets a sweep; the Python-driven backends run the chunk their
  graphs were exported with, so each is one point (marked as fixed by the export).
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

from rich.table import Table

from .schema import ResultRow, csv_columns, flatten

PLOTS = ("ttft_breakdown.png", "decode_vs_depth.png", "prefill_vs_chunk.png")


def _rows(doc: dict, key: str = "results") -> list[ResultRow]:
    return [ResultRow.from_dict(r) for r in doc.get(key, [])]


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def _range(s, fmt=_ms) -> str:
    return f"{fmt(s.median)} [{fmt(s.min)}–{fmt(s.max)}]" if s.n > 1 else fmt(s.median)


def table(doc: dict) -> Table:
    """The results as a rich table: medians, with [min–max] for TTFT and decode (at a depth of the prompt's
    length); skipped backends are listed under it."""
    m = doc.get("machine") or {}
    title = (f"edgevlm bench {doc.get('bundle_name', '')} · {doc['settings']['threads']} threads · "
             f"gen {doc['settings']['gen']} · repeat {doc['settings']['repeat']} · "
             + (f"memory {m['memory_bandwidth_gbs']:.1f} GB/s · " if m.get("memory_bandwidth_gbs")
                else "no bandwidth probe · ")
             + ("prompts with an image" if doc["settings"].get("image") else "text prompts"))
    t = Table(title=title, title_justify="left")
    columns = ["backend", "prompt", "chunk", "load ms", "preproc ms", "vision ms", "prefill ms", "prefill tok/s",
               "chunk ms", "TTFT ms", "decode tok/s", "peak RSS MB (+model)", "model MB", "MB/token",
               "BW GB/s (%)"]
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    skipped: dict[str, str] = {}
    for r in _rows(doc) + _rows(doc, "compare_results"):
        if r.skipped:
            skipped.setdefault(r.backend, r.skipped)
            continue
        prompt = str(r.prompt_tokens) if r.prompt_tokens == r.requested_prompt_tokens else \
            f"{r.prompt_tokens} (asked {r.requested_prompt_tokens})"
        if r.image and r.gen_tokens == 0:
            prompt += " (image turn)"  # edgevlm-bench's image turn: no decode
        t.add_row(
            r.backend + ("" if r.device == "host" else f" ({r.device})"), prompt,
            str(r.chunk_size or "-"), _ms(r.load_ms), _ms(r.preprocess_ms.median), _ms(r.vision_encode_ms.median),
            _ms(r.prefill_ms.median), f"{r.prefill_tps.median:,.0f}", _ms(r.prefill_chunk_ms.median),
            _range(r.ttft_ms), _range(r.decode_tps, lambda v: f"{v:,.1f}") if r.gen_tokens > 1 else "-",
            f"{r.peak_rss_mb:,.0f}" + (f" (+{r.peak_rss_mb - r.baseline_rss_mb:,.0f})" if r.baseline_rss_mb else ""),
            f"{r.model_bytes / 2**20:,.2f}", f"{r.decode_bytes_per_token / 2**20:,.2f}",
            f"{r.decode_bandwidth_gbs:.2f}" + (f" ({100 * r.bandwidth_fraction:.0f}%)" if r.bandwidth_fraction else ""),
        )
    t.caption = "; ".join(f"{b} skipped: {why}" for b, why in skipped.items()) or None
    t.caption_justify = "left"
    return t


def write_json(doc: dict, out: Path) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def write_csv(doc: dict, out: Path) -> Path:
    """Every row (results, the native chunk sweep, --compare peers), flattened."""
    path = out / "results.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns())
        w.writeheader()
        for key in ("results", "chunk_sweep", "compare_results"):
            for r in doc.get(key, []):
                w.writerow(flatten(r))
    return path


def write_plots(doc: dict, out: Path) -> list[Path]:
    """The three PNGs of the module docstring; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = [r for r in _rows(doc) + _rows(doc, "compare_results") if not r.skipped]
    paths = []

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    labels = [f"{r.backend}\n{r.prompt_tokens} tok" for r in rows]
    bottom = [0.0] * len(rows)
    for name, color in (("preprocess_ms", "#9ecae1"), ("vision_encode_ms", "#fd8d3c"), ("prefill_ms", "#3182bd")):
        values = [getattr(r, name).median for r in rows]
        ax.bar(labels, values, bottom=bottom, label=name.removesuffix("_ms").replace("_", " "), color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("ms (median)")
    ax.set_title("Time to first token: preprocess + vision encode + prefill")
    ax.legend()
    paths.append(_save(fig, out / PLOTS[0]))

    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in dict.fromkeys(r.backend for r in rows):
        rs = sorted((r for r in rows if r.backend == backend), key=lambda r: r.decode_depth)
        ax.errorbar([r.decode_depth for r in rs], [r.decode_tps.median for r in rs],
                    yerr=[[r.decode_tps.median - r.decode_tps.min for r in rs],
                          [r.decode_tps.max - r.decode_tps.median for r in rs]], marker="o", capsize=3, label=backend)
    speeds = [r.decode_tps.median for r in rows if r.decode_tps.median > 0]
    if speeds and max(speeds) > 20 * min(speeds):
        ax.set_yscale("log")
    ax.set_xlabel("depth (tokens in the KV cache)")
    ax.set_ylabel("decode tok/s (median, min-max)")
    ax.set_title("Decode speed vs depth")
    ax.legend()
    paths.append(_save(fig, out / PLOTS[1]))

    fig, ax = plt.subplots(figsize=(6, 4))
    sweep = [r for r in _rows(doc, "chunk_sweep") if not r.skipped]
    longest = max((r.prompt_tokens for r in rows), default=0)
    for backend in dict.fromkeys(r.backend for r in rows):
        pts = [r for r in rows + sweep if r.backend == backend and r.prompt_tokens == longest and r.chunk_size]
        pts.sort(key=lambda r: r.chunk_size)
        swept = len({r.chunk_size for r in pts}) > 1
        label = f"{backend} ({'set at load' if swept else 'fixed by the export'})"
        ax.plot([r.chunk_size for r in pts], [r.prefill_tps.median for r in pts], marker="o" if swept else "s",
                linestyle="-" if swept else "none", label=label)
    ax.set_xscale("log", base=2)
    ticks = sorted({r.chunk_size for r in rows + sweep if r.chunk_size})
    ax.set_xticks(ticks, [str(c) for c in ticks])
    ax.minorticks_off()
    ax.set_xlabel("prefill chunk size (tokens)")
    ax.set_ylabel(f"prefill tok/s (median, {longest}-token prompt)")
    ax.set_title("Prefill speed vs chunk size")
    ax.legend(fontsize="small")
    paths.append(_save(fig, out / PLOTS[2]))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_html(doc: dict, out: Path, plots: list[Path]) -> Path:
    """A self-contained page: settings, machine, the results table, and the plots (embedded PNGs)."""
    path = out / "report.html"
    cols = [c for c in csv_columns() if not c.endswith(("_min", "_max"))]
    rows = [flatten(r) for key in ("results", "chunk_sweep", "compare_results") for r in doc.get(key, [])]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    images = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{p.name}</figcaption></figure>" for p in plots
    ) or "<p>matplotlib is not installed: no plots (pip install 'edgevlm[bench]').</p>"
    note = ("Prefill vs chunk size: the native runtime sets the chunk at load time (a sweep); the onnxruntime, "
            "ExecuTorch and TVM graphs were exported with a fixed chunk, so each is one point.")
    meta = {k: doc.get(k) for k in ("schema_version", "created", "bundle", "model", "settings", "machine", "compare")}
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgevlm bench {html.escape(doc.get('bundle_name', ''))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}th{{background:#eee}}
figure{{display:inline-block;margin:1em}}pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>edgevlm bench: {html.escape(doc.get('bundle_name', ''))}</h1>
<p>Medians over {doc['settings']['repeat']} runs after {doc['settings']['warmup']} warm-up; decode speed at a depth
equal to the prompt length; bandwidth = bytes read per decoded token x tok/s, over the probe's
{(doc.get('machine') or {}).get('memory_bandwidth_gbs', 0):.2f} GB/s. Schema and definitions: docs/BENCHMARK.md.</p>
{images}<p>{html.escape(note)}</p>
<h2>Results</h2><table><tr>{head}</tr>{body}</table>
<h2>Settings and machine</h2><pre>{html.escape(json.dumps(meta, indent=2))}</pre>
</body></html>
"""
    path.write_text(page)
    return path


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_all(doc: dict, out: Path) -> dict[str, Path]:
    """results.json, results.csv, the plots and report.html in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(doc, out)
    return {"json": write_json(doc, out), "csv": write_csv(doc, out), "html": write_html(doc, out, plots),
            **{p.stem: p for p in plots}}


__all__ = ["PLOTS", "table", "write_all", "write_csv", "write_html", "write_json", "write_plots"]
