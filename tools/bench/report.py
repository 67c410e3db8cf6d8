"""The bench's reports: the orchestrator's JSON-able report written as JSON and as two markdown tables, with
notes on what the ratios compare when the variants are of different model families."""

from __future__ import annotations

import json
from pathlib import Path

from ..runtime.family import FAMILIES
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


def _ms_with_speedup(seconds: float, row: dict, key: str, baseline: str) -> str:
    if key == "latent_s" and not FAMILIES[row["family"]].latent_pass:
        return "-"  # no such stage (2.5): its ~0 s lap is no time to compare
    vs = row.get("vs_baseline")
    if row["variant"] == baseline or vs is None or vs["speedup"].get(key) is None:
        return f"{1000 * seconds:.1f}"
    return f"{1000 * seconds:.1f} ({vs['speedup'][key]:.2f}x)"


def _speedup(row: dict, baseline: str) -> str:
    if row["variant"] == baseline:
        return "1.00x (ref)"
    vs = row.get("vs_baseline")
    return "-" if vs is None else f"{vs['speedup']['total_s']:.2f}x"


def family_notes(report: dict) -> list[str]:
    """What the ratios mean when the rows are not all one model family (none when they are)."""
    rows, baseline = report["variants"], report["baseline"]
    families = sorted({r["family"] for r in rows})
    if len(families) == 1:
        return []
    base = next(r for r in rows if r["variant"] == baseline)
    code_ms = " and ".join(f"{1000 / cps:g} ms of audio in {fam}" for fam, cps in
                           sorted({(r["family"], r["codes_per_second"]) for r in rows}))
    notes = [f"Families differ ({', '.join(families)}): every variant made the same number of codes, but a code "
             f"is {code_ms}, so compare GPT ms per audio second and RTF across families, not GPT ms "
             "per code or total time."]
    if base["kind"] == TORCH:
        other = [r["variant"] for r in rows if r["vs_baseline"] is None]
        notes.append(f"torch is the {base['family']} reference (its checkpoint's family) and is compared only "
                     f"with {base['family']} bundles: no ratios for {', '.join(other)} (another family).")
    else:
        notes.append(f"The ratios against {baseline} ({base['family']}) compare different models for the "
                     "rows of another family, not two runtimes of one model.")
    return notes


def markdown(report: dict) -> str:
    """Two tables: one row per variant (family, totals, audio, memory, size), then one row per stage (ms,
    speedup against the baseline), then notes."""
    w, rows, baseline = report["workload"], report["variants"], report["baseline"]
    mode = "greedy" if w["greedy"] else f"{w['beams']} beams"
    lang = f", lang {w['lang']}" if any(r["family"] == "2.5" for r in rows) else ""
    lines = [
        f"## indextts2-onnx bench: {w['codes']} codes, {mode}, {w['steps']} CFM steps (cfg {w['cfg_rate']}){lang}, "
        f"{report['device']}, threads {report['threads'] or 'default'}, median of {report['repeats']}",
        "",
        f"{report['date']}, {report['platform']}, {report['cpu_count']} CPUs"
        + (f", {report['gpu']}" if report.get("gpu") else "")
        + f"; onnxruntime {report['versions']['onnxruntime']}, torch {report['versions']['torch'] or '-'}. "
        f"Speedup = {baseline} time / variant time, measured in this run.",
        "",
        "| variant | family | precision | providers | size MiB | load s | total s | audio s | RTF | speedup "
        "| TTFA s | GPT ms/code | GPT ms/audio s | peak RSS MiB | peak GPU MiB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["median"]
        lines.append(
            f"| {r['variant']} | {r['family']} | {precision_summary(r['precision'])} | {', '.join(r['providers'])} "
            f"| {_num(r['size_mib'], '.1f')} | {_num(r['load_s'])} | {m['total_s']:.3f} | {m['audio_s']:.3f} "
            f"| {m['rtf']:.3f} | {_speedup(r, baseline)} | {m['ttfa_s']:.3f} | {m['ms_per_code']:.2f} "
            f"| {m['ms_per_audio_s']:.1f} | {_num(r['peak_rss_mib'], '.0f')} | {_num(r['peak_gpu_mib'], '.0f')} |")
    lines += ["", "| stage (ms) | " + " | ".join(r["variant"] for r in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    for key in (*STAGES, "total_s"):
        lines.append(f"| {key[:-2]} | "
                     + " | ".join(_ms_with_speedup(r["median"][key], r, key, baseline) for r in rows) + " |")
    size_note = "torch's size is the checkpoint files it reads; " if any(r["kind"] == TORCH for r in rows) else ""
    latent_note = " 2.5 has no latent pass (latent -)." if any(r["family"] == "2.5" for r in rows) else ""
    lines += ["", "Stages sum to total; text is tokenisation (for bundles, the rest of the `synthesize` call "
              "outside its timed stages too) and prompt includes the emotion vector." + latent_note + " GPT ms "
              "per code and per audio second are the decode loop's time (decode) over the codes and over the "
              "audio seconds made. TTFA: for bundles, the "
              "first chunk of the same work through `stream()` (chunked, default plan, prompt preparation "
              "included; `stream_total_s` in the JSON is that call's total); for torch, which does not stream, "
              f"the total. {size_note}ONNX Runtime's peak GPU memory is not measured (no clean counter)."]
    for note in family_notes(report):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_reports(report: dict, json_path: Path, markdown_path: Path | None = None) -> str:
    """Write the JSON report (and the markdown tables); returns the markdown."""
    text = markdown(report)
    Path(json_path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if markdown_path is not None:
        Path(markdown_path).write_text(text, encoding="utf-8")
    return text
