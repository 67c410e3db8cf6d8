"""Emotion-from-text benchmark: the cost of the emotion model's prefill, of each answer token and of one
call, for one or more bundles, interleaved.

    python tools/bench_emotion.py --bundle BUNDLE [--bundle OTHER ...] [--rounds 3] [--threads 2]
        [--tokens 64] [--json OUT]

Each bundle's emotion model alone is loaded (its decoder graph and tokenizer; the TTS graphs are not),
with the runtime's session options. Per round and bundle, in alternating order: for each of two
emotion texts (Chinese and English descriptions), one call of `max_new_tokens = --tokens`, timed as a
whole and split into the prefill (the prompt in one decoder call) and the per-token steps. A real
answer (JSON scores of 8 emotions) is about 60-70 tokens in Qwen's tokenizer; random weights never end
an answer, so `--tokens` fixes its length. Medians over rounds; with several bundles, ratios against the
first (> 1: slower than the first). Timings on a shared machine drift between runs: compare one run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from indextts2_onnx.runtime.emotion_text import EmotionModel
from indextts2_onnx.runtime.manifest import load_manifest
from indextts2_onnx.runtime.sessions import Graph

TEXTS = ("他说话的声音有点颤抖，听起来很难过，又带着一点疲惫。",
         "She sounds a little sad and tired, as if she had not slept for days.")


class Timed(EmotionModel):
    """The bundle's emotion model with each decoder call timed (first call: the prefill)."""

    def __init__(self, graph, tokenizer, entry):
        super().__init__(graph, tokenizer, entry)
        self.calls: list[float] = []

    def _run(self, kv, ids):
        t = time.perf_counter()
        out = super()._run(kv, ids)
        self.calls.append(time.perf_counter() - t)
        return out


def open_model(bundle: Path, threads: int) -> Timed:
    manifest = load_manifest(bundle)
    if manifest.emotion_text is None:
        raise SystemExit(f"{bundle}: the bundle has no emotion model")
    name = manifest.emotion_text.graph
    graph = Graph.open(bundle, name, manifest.graphs[name], ["CPUExecutionProvider"], threads)
    model = EmotionModel.open(bundle, manifest, graph)
    return Timed(model.graph, model.tokenizer, model.entry)


def one_call(model: Timed, text: str, tokens: int) -> dict[str, float]:
    model.calls.clear()
    t = time.perf_counter()
    result = model(text, seed=0, max_new_tokens=tokens)
    total = time.perf_counter() - t
    steps = model.calls[1:]
    return {"call_ms": 1000 * total, "prefill_ms": 1000 * model.calls[0], "prompt_tokens": result.prompt_tokens,
            "token_ms": 1000 * sum(steps) / max(len(steps), 1), "new_tokens": result.new_tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="answer tokens per call (default 64)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.getLogger("indextts2_onnx.runtime.emotion_text").setLevel(logging.ERROR)  # random answers warn

    models = {str(b): open_model(b, args.threads) for b in args.bundle}
    for m in models.values():  # warm-up
        one_call(m, TEXTS[0], 4)
    runs: dict[str, list[dict]] = {name: [] for name in models}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in order:
            for text in TEXTS:
                runs[name].append(one_call(models[name], text, args.tokens))
    report = {}
    for name, rows in runs.items():
        report[name] = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        precision = load_manifest(Path(name)).graphs[models[name].graph.name].precision
        report[name]["precision"] = precision
    first = report[str(args.bundle[0])]
    print(f"{'bundle':40s} {'prec':5s} {'prompt':>6s} {'prefill ms':>10s} {'ms/token':>9s} {'tokens':>6s} "
          f"{'call ms':>9s} {'vs first':>8s}")
    for name, row in report.items():
        row["vs_first"] = row["call_ms"] / first["call_ms"]
        print(f"{name[-40:]:40s} {row['precision']:5s} {row['prompt_tokens']:6.0f} {row['prefill_ms']:10.1f} "
              f"{row['token_ms']:9.2f} {row['new_tokens']:6.0f} {row['call_ms']:9.1f} {row['vs_first']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "tokens": args.tokens, "rounds": args.rounds,
                                         "bundles": report}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
