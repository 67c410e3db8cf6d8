"""The bench's reports: the orchestrator's JSON-able report written as JSON and as two markdown tables."""

from __future__ import annotations

import json
from pathlib import Path

from .workload import STAGES, TORCH


def precision_summary(precision: dict[str, str]) -> str:
    """'fp32' when every graph shares one precision, else counts: 'fp32 x8, int8 x2'."""
    counts: dict[str, int] = {}
    for p in precision.values():
        counts[p] = counts.get(p, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{p} x{n}" for p, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _ms_with_speedup(seconds: float, row: dict, key: str) -> str:
    vs = row.get("vs_torch")
    if row["kind"] == TORCH or vs is None or vs["speedup"].get(key) is None:
        return f"{1000 * seconds:.1f}"
    return f"{1000 * seconds:.1f} ({vs['speedup'][key]:.2f}x)"


def markdown(report: dict) -> str:
    """Two tables: one row per variant (totals, memory, size), then one row per stage (ms, speedup)."""
    w, rows = report["workload"], report["variants"]
    mode = "greedy" if w["greedy"] else f"{w['beams']} beams"
    lines = [
        f"## indextts2-onnx bench: {w['codes']} codes, {mode}, {w['steps']} CFM steps (cfg {w['cfg_rate']}), "
        f"{report['device']}, threads {report['threads'] or 'default'}, median of {report['repeats']}",
        "",
        f"{report['date']}, {report['platform']}, {report['cpu_count']} CPUs"
        + (f", {report['gpu']}" if report.get("gpu") else "")
        + f"; onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch'] or '-'}. "
        "Speedup = torch time / variant time, measured in this run.",
        "",
        "| variant | precision | providers | size MiB | load s | total s | RTF | speedup | TTFA s | GPT ms/code "
        "| peak RSS MiB | peak GPU MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, vs = r["median"], r.get("vs_torch")
        speed = "1.00x (ref)" if r["kind"] == TORCH else (
            "-" if vs is None else f"{vs['speedup']['total_s']:.2f}x")
        lines.append(
            f"| {r['variant']} | {precision_summary(r['precision'])} | {', '.join(r['providers'])} "
            f"| {_num(r['size_mib'], '.1f')} | {_num(r['load_s'])} | {m['total_s']:.3f} | {m['rtf']:.3f} | {speed} "
            f"| {m['ttfa_s']:.3f} | {m['ms_per_code']:.2f} | {_num(r['peak_rss_mib'], '.0f')} "
            f"| {_num(r['peak_gpu_mib'], '.0f')} |")
    lines += ["", "| stage (ms) | " + " | ".join(r["variant"] for r in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    for key in (*STAGES, "total_s"):
        lines.append(f"| {key[:-2]} | " + " | ".join(_ms_with_speedup(r["median"][key], r, key) for r in rows) + " |")
    size_note = "torch's size is the checkpoint files it reads; " if any(r["kind"] == TORCH for r in rows) else ""
    lines += ["", "Stages sum to total; text is tokenisation (for bundles, the rest of the `synthesize` call "
              "outside its timed stages too) and prompt includes the emotion vector. TTFA: for bundles, the "
              "first chunk of the same work through `stream()` (chunked, default plan, prompt preparation "
              "included; `stream_total_s` in the JSON is that call's total); for torch, which does not stream, "
              f"the total. {size_note}ONNX Runtime's peak GPU memory is not measured (no clean counter)."]
    return "\n".join(lines) + "\n"


def write_reports(report: dict, json_path: Path, markdown_path: Path | None = None) -> str:
    """Write the JSON report (and the markdown tables); returns the markdown."""
    text = markdown(report)
    Path(json_path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if markdown_path is not None:
        Path(markdown_path).write_text(text, encoding="utf-8")
    return text
