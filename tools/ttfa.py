"""Time to first audio of `IndexTTS2.stream()` against the non-streamed `synthesize()`, same work.

    python tools/ttfa.py BUNDLE [--codes 250] [--beams 3 | --greedy] [--steps 25] [--rounds 1] [--threads N]
                                [--first 25] [--chunk 100] [--overlap 10] [--prompt-frames N]

One synthetic voice prompt (10 s unless --voice-seconds; a WAV file, so prompt preparation is timed as
a user pays it), one sentence that is one segment, exactly `--codes` codes (the stop token is banned
until then), the same seed for both calls (so the same codes). Rounds alternate the two calls. Prints per round and the medians:
the non-streamed total, the streamed call's time to its first chunk and its total, and the ratios
TTFA / non-streamed total and streamed total / non-streamed total (issue targets: <= 0.20 with beams,
<= 0.10 greedy; <= 1.15). Timings are never asserted anywhere: on a shared machine compare ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import soundfile as sf

from indextts2_onnx.runtime import IndexTTS2, SynthesisOptions
from indextts2_onnx.runtime.audio import synthetic_voice

TEXT = "The quick brown fox jumps over the lazy dog while the evening light fades over the quiet hills."


def streamed(tts: IndexTTS2, voice: str, options: SynthesisOptions) -> tuple[float, float, int]:
    """(seconds to the first chunk, seconds to the last, chunks) of one streamed call."""
    t0 = time.perf_counter()
    first, n = None, 0
    for _ in tts.stream(TEXT, voice, options):
        n += 1
        first = first if first is not None else time.perf_counter() - t0
    return first, time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--codes", type=int, default=250)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--voice-seconds", type=float, default=10.0, help="length of the synthetic voice prompt")
    ap.add_argument("--first", type=int, default=None, help="first_chunk_codes (default: SynthesisOptions')")
    ap.add_argument("--chunk", type=int, default=None, help="chunk_codes")
    ap.add_argument("--overlap", type=int, default=None, help="overlap_codes")
    ap.add_argument("--prompt-frames", type=int, default=None, help="chunk_prompt_frames (default: the whole prompt)")
    a = ap.parse_args(argv)

    tts = IndexTTS2(a.bundle, threads=a.threads, verify=False)
    if len(tts.tokenize(TEXT)) != 1:
        raise SystemExit("the sentence must be one segment for this bundle")
    chunking = {k: v for k, v in (("first_chunk_codes", a.first), ("chunk_codes", a.chunk),
                                  ("overlap_codes", a.overlap), ("chunk_prompt_frames", a.prompt_frames))
                if v is not None}
    options = SynthesisOptions(seed=0, greedy=a.greedy, num_beams=1 if a.greedy else a.beams, steps=a.steps,
                               max_codes=a.codes, min_codes=a.codes, **chunking)
    with tempfile.TemporaryDirectory() as tmp:
        voice = str(Path(tmp) / "voice.wav")
        sf.write(voice, synthetic_voice(a.voice_seconds, 22050), 22050)
        tts.synthesize("Warm up.", voice, options.with_overrides(max_codes=20, min_codes=20, steps=2))
        rows = []
        for r in range(a.rounds):
            order = ("whole", "stream") if r % 2 == 0 else ("stream", "whole")
            row = {}
            for kind in order:
                if kind == "whole":
                    t0 = time.perf_counter()
                    result = tts.synthesize(TEXT, voice, options)
                    row["whole_s"] = time.perf_counter() - t0
                    assert result.metrics.codes == a.codes
                else:
                    row["ttfa_s"], row["stream_s"], row["chunks"] = streamed(tts, voice, options)
            row["ttfa_ratio"] = row["ttfa_s"] / row["whole_s"]
            row["total_ratio"] = row["stream_s"] / row["whole_s"]
            rows.append(row)
            print(f"round {r + 1}: whole {row['whole_s']:.2f} s | stream: first audio {row['ttfa_s']:.2f} s, "
                  f"total {row['stream_s']:.2f} s, {row['chunks']} chunks | TTFA/whole {row['ttfa_ratio']:.3f}, "
                  f"stream/whole {row['total_ratio']:.3f}", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    plan = options.chunk_plan()
    strategy = "greedy" if a.greedy else f"{a.beams} beams"
    print(f"\n{a.bundle}: {a.voice_seconds:g} s prompt, {a.codes} codes, {strategy}, {a.steps} steps, plan "
          f"first {plan.first_chunk_codes} / max {plan.chunk_codes} / overlap {plan.overlap_codes}, prompt frames "
          f"{options.chunk_prompt_frames or 'all'}, "
          f"{a.rounds} round(s), medians")
    print("| whole s | TTFA s | stream total s | chunks | TTFA / whole | stream / whole |\n"
          "|---:|---:|---:|---:|---:|---:|\n"
          f"| {med['whole_s']:.2f} | {med['ttfa_s']:.2f} | {med['stream_s']:.2f} | {med['chunks']:.0f} | "
          f"{med['ttfa_ratio']:.3f} | {med['total_ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
