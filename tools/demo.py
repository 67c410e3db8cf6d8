"""Run the whole torch-free pipeline on a bundle and write a WAV file.

    python tools/demo.py onnx_models/demo [--out demo.wav] [--seed 0] [--greedy] [--steps 25]

The voice prompt's front-end features (SeamlessM4T features, Kaldi fbank, log-mel) are random arrays
of the right shapes here: the audio and text front end comes with a later release. With the random-weight
demo bundle the result is noise; with a bundle exported from real weights the stages are the real ones.
"""

from __future__ import annotations

import argparse

import numpy as np

from indextts2_onnx.runtime import IndexTTS2
from indextts2_onnx.runtime.audio import write_wav


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--out", default="demo.wav")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--steps", type=int, default=25, help="flow-matching steps")
    p.add_argument("--max-codes", type=int, default=200)
    args = p.parse_args()
    tts = IndexTTS2(args.bundle)
    rng = np.random.default_rng(args.seed)

    # a stand-in 3 s prompt: 150 stacked feature frames (50 Hz), 298 fbank frames, 258 mel frames
    mask = np.ones((1, 150), np.int64)
    spk = tts.speaker_from_features(rng.standard_normal((1, 150, 160)), mask, rng.standard_normal((1, 150, 160)),
                                    mask, rng.standard_normal((298, 80)), rng.standard_normal((1, 80, 258)))
    emovec = tts.emotion_vector(spk, vector=[0, 0, 0, 0, 0, 0, 0, 0.6])  # mostly "calm"
    ids = rng.integers(3, tts.manifest.gpt.number_text_tokens, size=24).tolist()  # a stand-in text segment
    codes, latent = tts.generate_codes(ids, spk, emovec, greedy=args.greedy, seed=args.seed,
                                       max_codes=args.max_codes)
    timings = dict(tts.metrics)
    mel = tts.decode_mel(codes, latent, spk, steps=args.steps, seed=args.seed)
    wav = tts.vocode(mel)
    sr = tts.manifest.acoustic.sample_rate
    write_wav(args.out, wav, sr)
    timings.update(tts.metrics)
    print(f"providers: {tts.providers}")
    print(f"{len(codes)} codes -> mel {mel.shape} -> {wav.shape[0]} samples ({wav.shape[0] / sr:.2f} s) -> {args.out}")
    print(f"GPT {timings['decode_s'] * 1000:.0f} ms ({timings['ms_per_code']:.2f} ms/code), "
          f"latent {timings['latent_s'] * 1000:.0f} ms, mel {timings['mel_s'] * 1000:.0f} ms "
          f"({args.steps} steps), vocoder {timings['vocoder_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
