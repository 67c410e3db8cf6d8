"""Mel decoding: semantic codes (and, for 2.0, the GPT latent) -> mel frames (upstream's s2mel stage).

    content   = vq2emb(codes) + gpt_layer(latent)           2.0: latent_projector graph, (1, N, D)
              = codec_decoder(codes)                        2.5: the codec's decoder, (1, 2N, D) at 50 Hz
    condition = length_regulator(content, target frames)    2.0: int(N * 1.72); 2.5: int(2N * 1.72 * df)
    mu        = [speaker.prompt_condition | condition]
    mel       = CFM Euler loop over the DiT from noise (1, n_mels, F + target frames), prompt frames cut off
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .flow import solve_euler
from .sessions import Graph
from .speaker import Speaker

CODE_TO_FRAME = 1.72  # upstream infer_v2: target_lengths = (code_lens * 1.72).long()
DIT_MAX_FRAMES = 16384  # prompt + target: upstream's DiT position table (and our graph's bound) holds 16384


def target_frames(n_codes: int) -> int:
    """Mel frames generated for `n_codes` codes: int(N * 1.72), in float32 like upstream's tensor math."""
    return int(np.float32(n_codes) * np.float32(CODE_TO_FRAME))


def target_frames_25(n_codes: int, duration_factor: float = 1.0) -> int:
    """IndexTTS-2.5's mel frames for `n_codes` 25 Hz codes: int(2N * 1.72 * duration_factor), a Python
    float64 product left to right as upstream writes it (2N: the codec decoder's 50 Hz frames)."""
    return int(2 * n_codes * CODE_TO_FRAME * duration_factor)


def cfm_noise(seed: int | None, n_mels: int, frames: int) -> np.ndarray:
    """The CFM start noise (1, n_mels, frames) for `seed`, drawn frame by frame: the first k frames are the
    same whatever `frames` is, so a stream that draws noise for its longest possible segment and the
    non-streamed call that knows the length start from the same noise."""
    return np.ascontiguousarray(np.random.default_rng(seed).standard_normal((frames, n_mels), dtype=np.float32).T[None])


@dataclass
class MelDecoder:
    """The s2mel graphs of one bundle: `projector` (2.0) or `codec` (2.5) makes the content."""

    projector: Graph | None
    regulator: Graph
    dit: Graph
    codec: Graph | None = None

    def content(self, codes: np.ndarray, latent: np.ndarray | None) -> np.ndarray:
        """(N,) codes (and (1, N, d) latent for 2.0) -> the content the regulator stretches: (1, N, D) from
        the latent projector, or (1, 2N, D) from the 2.5 codec decoder (which needs no latent)."""
        codes = codes[None].astype(np.int64)
        if self.codec is not None:
            return self.codec.run({"codes": codes})[0]
        return self.projector.run({"latent": latent.astype(np.float32), "codes": codes})[0]

    def condition(self, codes: np.ndarray, latent: np.ndarray | None, frames: int | None = None) -> np.ndarray:
        """(N,) codes (+ latent) -> the length-regulated target condition (1, frames, C); frames defaults to
        2.0's target_frames(N) (2.5 and a streamed chunk pass theirs)."""
        return self.regulate(self.content(codes, latent), target_frames(codes.shape[0]) if frames is None else frames)

    def regulate(self, content: np.ndarray, frames: int) -> np.ndarray:
        """(1, T_in, D) content stretched to `frames` and refined -> (1, frames, C)."""
        return self.regulator.run({"content": content, "length": np.array(frames, dtype=np.int64)})[0]

    def estimate(self, x, prompt_x, x_lens, t, style, cond) -> np.ndarray:
        return self.dit.run({"x": x, "prompt_x": prompt_x, "x_lens": x_lens, "t": t, "style": style,
                             "cond": cond})[0]

    def decode(self, codes: np.ndarray, latent: np.ndarray | None, spk: Speaker, noise: np.ndarray,
               steps: int, cfg_rate: float, frames: int | None = None) -> np.ndarray:
        """Mel frames (1, n_mels, frames) for one segment (or, with `frames`, one streamed chunk of it);
        `noise` covers prompt + target frames."""
        mu = np.concatenate([spk.prompt_condition, self.condition(codes, latent, frames)], axis=1)  # (1, F+T, C)
        mel = solve_euler(self.estimate, mu, spk.ref_mel, spk.style, noise, steps, cfg_rate)
        return mel[:, :, spk.ref_mel.shape[2]:]
