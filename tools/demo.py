"""Speak a sentence with a bundle through the torch-free runtime and write a WAV file.

    python tools/demo.py onnx_models/demo [--out demo.wav] [--speaker VOICE.wav] [--text "..."] [--seed 0]

Without --speaker a synthetic 3 s voice-like prompt is written next to the output and used. With the
random-weight demo bundle the result is noise; with a bundle exported from real weights it is speech.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from indextts2_onnx.runtime import IndexTTS2, SynthesisOptions
from indextts2_onnx.runtime.audio import synthetic_voice, write_wav

TEXT = "Hello! This is IndexTTS2 running on ONNX Runtime, without torch."


def write_prompt(path: Path, sr: int = 22050, seconds: float = 3.0) -> Path:
    """The runtime's synthetic voice-like buzz as a WAV file: a stand-in voice prompt."""
    write_wav(path, synthetic_voice(seconds, sr), sr)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--out", default="demo.wav")
    p.add_argument("--speaker", default=None, help="voice prompt (default: a synthetic one)")
    p.add_argument("--text", default=TEXT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="default")
    args = p.parse_args()
    out = Path(args.out)
    speaker = args.speaker or write_prompt(out.with_name(out.stem + "_prompt.wav"))
    tts = IndexTTS2(args.bundle)
    result = tts.synthesize(args.text, speaker, SynthesisOptions(seed=args.seed, preset=args.preset))
    sr, wav, m = result.sample_rate, result.audio, result.metrics
    write_wav(out, wav, sr)
    print(f"providers: {tts.providers}")
    print(f"{args.text!r} -> {out} ({wav.shape[0] / sr:.2f} s at {sr} Hz)")
    print(f"total {m.total_s:.2f} s, RTF {m.rtf:.2f}: prompt {m.prompt_s * 1000:.0f} ms, "
          f"GPT {m.decode_s * 1000:.0f} ms ({m.ms_per_code:.2f} ms/code), mel {m.mel_s * 1000:.0f} ms, "
          f"vocoder {m.vocoder_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
