"""Generate semantic codes from a bundle with the torch-free runtime and print what happened.

    python tools/demo.py onnx_models/demo [--seed 0] [--greedy]

The speaker is built from random arrays of the right shapes (the audio front end that turns a voice
prompt into a Speaker comes with a later release), and the text is a few token ids.
"""

from __future__ import annotations

import argparse

import numpy as np

from indextts2_onnx.runtime import IndexTTS2, Speaker


def random_speaker(tts: IndexTTS2, rng: np.random.Generator, frames: int = 150) -> Speaker:
    """A stand-in voice prompt of about 3 s: semantic features at 50 Hz, mel frames at ~86 Hz."""
    dim = tts.manifest.gpt.semantic_dim
    mel_frames = int(frames * 1.72)
    return Speaker(semantic=rng.standard_normal((1, frames, dim)),
                   emotion_semantic=rng.standard_normal((1, frames, dim)),
                   style=rng.standard_normal((1, tts.manifest.acoustic.style_dim)),
                   ref_mel=rng.standard_normal((1, 80, mel_frames)),
                   prompt_condition=rng.standard_normal((1, mel_frames, dim)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--max-codes", type=int, default=200)
    args = p.parse_args()
    tts = IndexTTS2(args.bundle)
    rng = np.random.default_rng(args.seed)
    spk = random_speaker(tts, rng)
    emovec = tts.emotion_vector(spk, vector=[0, 0, 0, 0, 0, 0, 0, 0.6])  # mostly "calm"
    ids = rng.integers(3, tts.manifest.gpt.number_text_tokens, size=24).tolist()
    codes, latent = tts.generate_codes(ids, spk, emovec, greedy=args.greedy, seed=args.seed,
                                       max_codes=args.max_codes)
    m = tts.metrics
    print(f"providers: {tts.providers}")
    print(f"{len(codes)} codes (~{len(codes) / 50:.2f} s of speech), latent {latent.shape}")
    print(f"first codes: {codes[:16].tolist()}")
    print(f"decode {m['decode_s'] * 1000:.0f} ms ({m['ms_per_code']:.2f} ms/code), "
          f"latent pass {m['latent_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
