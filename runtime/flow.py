"""Flow matching: the Euler loop with classifier-free guidance around the DiT estimator graph.

Upstream `CFM.solve_euler` (upstream-quirks 9), in numpy float32:

    t_span = linspace(0, 1, steps + 1); t = 0
    prompt_x = [ref_mel | 0];  x = noise with the prompt region zeroed
    each step k: dt = t_span[k] - t_span[k - 1]
                 v_cond, v_uncond = DiT([x, x], [prompt_x, 0], x_lens, [t, t], [style, 0], [mu, 0])
                 x += dt * ((1 + r) * v_cond - r * v_uncond);  t += dt  (float32)
                 x[..., :prompt frames] = 0

(Upstream also sets `dt = t_span[k + 1] - t` at the end of a step, but the next step overwrites it.)

The noise comes from the caller or a seedable generator; the DiT graph runs once per step on batch 2.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# estimator(x [B,80,T], prompt_x [B,80,T], x_lens int64 [B], t [B], style [B,S], mu [B,T,C]) -> [B,80,T]
Estimator = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def timesteps(steps: int) -> np.ndarray:
    """float32 (steps + 1,) from 0 to 1, bit-equal to torch.linspace(0, 1, steps + 1).

    torch fills the first half as step * i and the second as 1 - step * (n - 1 - i), each with one
    float32 rounding (a fused multiply-add); the float64 products of float32 values reproduce it."""
    n = steps + 1
    if n == 1:
        return np.zeros(1, np.float32)
    i = np.arange(n)
    step = np.float64(np.float32(1.0 / (n - 1)))
    return np.where(i < n // 2, step * i, 1.0 - step * (n - 1 - i)).astype(np.float32)


def solve_euler(estimator: Estimator, mu: np.ndarray, prompt_mel: np.ndarray, style: np.ndarray,
                noise: np.ndarray, steps: int = 25, cfg_rate: float = 0.7) -> np.ndarray:
    """Integrate from `noise` (1, n_mels, T) to a mel (1, n_mels, T) whose first prompt frames are 0.

    mu: (1, T, C) condition for the whole sequence (prompt then target); prompt_mel: (1, n_mels, F)."""
    f32 = np.float32
    prompt_len = prompt_mel.shape[-1]
    x = noise.astype(f32, copy=True)
    x[..., :prompt_len] = 0
    prompt_x = np.zeros_like(x)
    prompt_x[..., :prompt_len] = prompt_mel
    n_frames = x.shape[-1]
    r = f32(cfg_rate)
    t_span = timesteps(steps)
    t = t_span[0]
    if cfg_rate > 0:
        prompt_b = np.concatenate([prompt_x, np.zeros_like(prompt_x)])
        style_b = np.concatenate([style, np.zeros_like(style)]).astype(f32)
        mu_b = np.concatenate([mu, np.zeros_like(mu)]).astype(f32)
    for k in range(1, steps + 1):
        dt = f32(t_span[k] - t_span[k - 1])
        if cfg_rate > 0:
            # upstream passes a batch-1 x_lens that broadcasts; the graph takes one length per row
            x_lens = np.full(2, n_frames, dtype=np.int64)
            v = estimator(np.concatenate([x, x]), prompt_b, x_lens, np.array([t, t], f32), style_b, mu_b)
            v = (f32(1) + r) * v[:1] - r * v[1:]
        else:
            x_lens = np.full(1, n_frames, dtype=np.int64)
            v = estimator(x, prompt_x, x_lens, np.array([t], f32), style.astype(f32), mu.astype(f32))
        x = x + dt * v
        t = f32(t + dt)
        x[..., :prompt_len] = 0
    return x
