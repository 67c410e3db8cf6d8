"""Mel decoding: semantic codes and the GPT latent -> mel frames (upstream's s2mel stage).

    content   = vq2emb(codes) + gpt_layer(latent)                    (latent_projector graph)
    condition = length_regulator(content, int(N * 1.72))             (length_regulator graph)
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


def target_frames(n_codes: int) -> int:
    """Mel frames generated for `n_codes` codes: int(N * 1.72), in float32 like upstream's tensor math."""
    return int(np.float32(n_codes) * np.float32(CODE_TO_FRAME))


def cfm_noise(seed: int | None, n_mels: int, frames: int) -> np.ndarray:
    """The CFM start noise (1, n_mels, frames) for `seed`, drawn frame by frame: the first k frames are the
    same whatever `frames` is, so a stream that draws noise for its longest possible segment and the
    non-streamed call that knows the length start from the same noise."""
    return np.ascontiguousarray(np.random.default_rng(seed).standard_normal((frames, n_mels), dtype=np.float32).T[None])


@dataclass
class MelDecoder:
    projector: Graph
    regulator: Graph
    dit: Graph

    def condition(self, codes: np.ndarray, latent: np.ndarray, frames: int | None = None) -> np.ndarray:
        """(N,) codes and (1, N, d) latent -> the length-regulated target condition (1, frames, C);
        frames defaults to target_frames(N) (a streamed chunk passes its span of the segment's grid)."""
        content = self.projector.run({"latent": latent.astype(np.float32), "codes": codes[None].astype(np.int64)})[0]
        return self.regulate(content, target_frames(codes.shape[0]) if frames is None else frames)

    def regulate(self, content: np.ndarray, frames: int) -> np.ndarray:
        """(1, T_in, D) content stretched to `frames` and refined -> (1, frames, C)."""
        return self.regulator.run({"content": content, "length": np.array(frames, dtype=np.int64)})[0]

    def estimate(self, x, prompt_x, x_lens, t, style, cond) -> np.ndarray:
        return self.dit.run({"x": x, "prompt_x": prompt_x, "x_lens": x_lens, "t": t, "style": style,
                             "cond": cond})[0]

    def decode(self, codes: np.ndarray, latent: np.ndarray, spk: Speaker, noise: np.ndarray,
               steps: int, cfg_rate: float, frames: int | None = None) -> np.ndarray:
        """Mel frames (1, n_mels, frames) for one segment (or, with `frames`, one streamed chunk of it);
        `noise` covers prompt + target frames."""
        mu = np.concatenate([spk.prompt_condition, self.condition(codes, latent, frames)], axis=1)  # (1, F+T, C)
        mel = solve_euler(self.estimate, mu, spk.ref_mel, spk.style, noise, steps, cfg_rate)
        return mel[:, :, spk.ref_mel.shape[2]:]
