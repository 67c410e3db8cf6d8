"""Chunked acoustic decoding for streaming: semantic codes -> audio pieces while the GPT still decodes.

The non-streamed s2mel stage (s2mel.MelDecoder.decode) sees a whole segment at once: the length regulator
normalises over the whole sequence (GroupNorm(1, C)) and the DiT attends over every frame, so no chunking
is exact. This module decodes the codes in chunks, as upstream's TensorRT backend does, and keeps every
part that can be exact exact:

    codes      0 ........ c ==== a ------------ b ........ N       chunk j: new codes [a, b)
                          |ctx |                                   left context c = max(0, a - overlap)
    frames     f(x) = target_frames(x) = int(x * 1.72)             global frame grid of the whole segment
                      (2.5: int(2x * 1.72 * duration_factor), `grid`)
    chunk mel  frames [f(c), f(b))  from  mu = [prompt condition | regulate(content[c:b], f(b) - f(c))]
                                    and   noise = full noise columns [prompt | F + f(c) .. F + f(b))
    audio      the context frames [f(c), f(a)) overlap the previous chunk's last frames: the two are
               cross-faded there; everything else is taken as decoded

* latent rows come per chunk from gpt.LatentStream (exact: the GPT is causal);
* content (latent projector: vq2emb + gpt_layer, per position) for codes [c, b) is exact; 2.5's codec
  decoder (convolutions over neighbouring codes) sees only the chunk's codes, so its edges differ;
* frame boundaries are f(a) on the global grid, so the pieces add up to exactly f(N) * hop samples, the
  non-streamed length, and a plan with one chunk reproduces the non-streamed decode bit for bit;
* each chunk's noise is the slice of the whole-segment noise for its frames, so where the two decodes
  agree on the condition they also start from the same noise (the overlap region uses the same noise in
  both chunks, which keeps the cross-fade between two close signals).

What differs from the non-streamed decode: the regulator's interpolation and GroupNorm see only the chunk,
the DiT sees the prompt and the chunk (no right context), and BigVGAN sees the chunk's mel only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import time

import numpy as np

from .errors import require_finite
from .s2mel import MelDecoder, target_frames
from .sessions import Graph
from .speaker import Speaker

FADES = ("hann", "linear")


@dataclass(frozen=True)
class ChunkPlan:
    """Where a segment's codes are cut. Chunk sizes grow: first_chunk_codes, then x growth each chunk, capped
    at chunk_codes (CosyVoice2 doubles; upstream TRT uses 100 fixed with 5 codes of overlap).

    first_chunk_codes: codes in the first chunk (small: it sets the time to first audio)
    chunk_codes      : the largest chunk
    overlap_codes    : codes of left context each later chunk re-decodes; their frames are cross-faded
    growth           : size factor from one chunk to the next (1 = fixed size after the first)
    fade             : cross-fade window, "hann" (raised cosine) or "linear"
    """

    first_chunk_codes: int = 25
    chunk_codes: int = 100
    overlap_codes: int = 10  # measured (tools/stream_quality.py): 10 beats 5 at the joins for ~+5% time
    growth: float = 2.0
    fade: str = "hann"

    def __post_init__(self):
        if not 0 <= self.overlap_codes < self.first_chunk_codes <= self.chunk_codes:
            raise ValueError("need 0 <= overlap_codes < first_chunk_codes <= chunk_codes, got "
                             f"{self.overlap_codes}, {self.first_chunk_codes}, {self.chunk_codes}")
        if not self.growth >= 1:
            raise ValueError(f"growth must be >= 1, got {self.growth}")
        if self.fade not in FADES:
            raise ValueError(f"fade must be one of {FADES}, got {self.fade!r}")

    def size(self, index: int) -> int:
        """New codes in chunk `index` (0-based) when the segment is long enough."""
        return int(min(self.chunk_codes, round(self.first_chunk_codes * self.growth ** index)))

    def boundaries(self, n_codes: int) -> list[int]:
        """Code indices [0, b1, ..., n_codes] where the chunks of an `n_codes` segment start and end.

        The streaming decoder cuts at the same places: a chunk is decoded once its last code is known, and
        whatever is left when the segment ends (possibly fewer codes than the plan's size) is the last."""
        cuts, j = [0], 0
        while cuts[-1] < n_codes:
            cuts.append(min(n_codes, cuts[-1] + self.size(j)))
            j += 1
        return cuts


def fade_in(samples: int, kind: str = "hann") -> np.ndarray:
    """float32 (samples,) weights rising from ~0 to ~1 (sampled at bin centres); 1 - fade_in is the fade-out,
    so the two sum to exactly 1 at every sample of the join (no level change where the chunks meet)."""
    t = (np.arange(samples, dtype=np.float64) + 0.5) / max(samples, 1)
    w = 0.5 - 0.5 * np.cos(np.pi * t) if kind == "hann" else t
    return w.astype(np.float32)


def crossfade(tail: np.ndarray, head: np.ndarray, kind: str = "hann") -> np.ndarray:
    """Previous chunk's last samples (n,) fading out, the next chunk's first samples (n,) fading in -> (n,)."""
    w = fade_in(tail.shape[0], kind)
    return tail * (np.float32(1) - w) + head * w


def noise_columns(noise: np.ndarray, prompt_frames: int, start: int, end: int) -> np.ndarray:
    """Start noise for a chunk whose target frames are [start, end) on the segment's grid:
    (1, n_mels, F + T_max) whole-segment noise -> (1, n_mels, F + end - start) [prompt | chunk] columns."""
    if noise.shape[2] < prompt_frames + end:
        raise ValueError(f"noise has {noise.shape[2]} frames, this chunk needs {prompt_frames + end}")
    return np.concatenate([noise[:, :, :prompt_frames], noise[:, :, prompt_frames + start:prompt_frames + end]],
                          axis=2)


def prompt_tail(spk: Speaker, noise: np.ndarray, frames: int | None) -> tuple[Speaker, np.ndarray]:
    """The voice prompt cut to its last `frames` mel frames as the chunks' in-context condition, and the
    whole-segment noise (1, n_mels, F + T) with the dropped prompt columns removed (the target columns stay
    the non-streamed call's; prompt columns are zeroed by the CFM loop anyway). None, or at least the
    prompt's length, keeps both as they are. Each chunk's DiT cost grows with prompt + chunk frames, and a
    10 s prompt is 861 frames against 43 for a 25-code chunk: this is the lever on time to first audio."""
    prompt = spk.ref_mel.shape[2]
    if frames is None or frames >= prompt:
        return spk, noise
    cut = prompt - frames
    tail = replace(spk, ref_mel=spk.ref_mel[:, :, cut:], prompt_condition=spk.prompt_condition[:, cut:])
    return tail, noise[:, :, cut:]


@dataclass
class ChunkedDecoder:
    """Streaming s2mel + vocoder for one segment: `feed(codes)` as the GPT settles them, then `finish()`.

    mel     : the bundle's MelDecoder (latent projector, length regulator, DiT)
    vocoder : the BigVGAN graph (mel (1, n_mels, T) -> (1, T * hop))
    latents : new codes (n,) -> their latent rows (1, n, d), called once per feed in order
              (gpt.LatentStream.extend, or a slice of a precomputed full latent); None for 2.5 (no latent)
    spk     : the voice prompt (prompt condition, ref mel, style)
    noise   : (1, n_mels, F + T_max) whole-segment start noise, T_max >= target_frames(final codes);
              the non-streamed decode's noise gives the closest result
    steps, cfg_rate: CFM settings, as MelDecoder.decode
    plan    : where to cut (ChunkPlan)
    grid    : codes -> mel frames of the segment's first codes (target_frames; 2.5: target_frames_25 with
              the call's duration factor)

    Each returned piece is float32 audio in order; concatenated they have grid(N) * hop samples.
    """

    mel: MelDecoder
    vocoder: Graph
    latents: Callable[[np.ndarray], np.ndarray] | None
    spk: Speaker
    noise: np.ndarray
    steps: int
    cfg_rate: float
    plan: ChunkPlan = ChunkPlan()
    hop: int = 256
    grid: Callable[[int], int] = target_frames
    codes: list[np.ndarray] = field(default_factory=list)  # every code fed so far, as runs
    latent: list[np.ndarray] = field(default_factory=list)  # their latent rows, as runs (1, n, d)
    done: int = 0  # codes already decoded (the end b of the last chunk)
    chunks: int = 0  # chunks decoded so far
    tail: np.ndarray | None = None  # held-back audio of the last chunk's final overlap frames
    mel_s: float = 0.0  # seconds in s2mel (projector, regulator, CFM loop) over all chunks
    vocoder_s: float = 0.0  # seconds in BigVGAN over all chunks

    @property
    def fed(self) -> int:
        return sum(c.shape[0] for c in self.codes)

    def feed(self, codes: np.ndarray) -> list[np.ndarray]:
        """Take the next run of final codes (n,) -> audio pieces now ready (zero or more, in order)."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        if codes.size:
            self.codes.append(codes)
            if self.latents is not None:
                self.latent.append(np.asarray(self.latents(codes), dtype=np.float32))
        pieces = []
        while self.fed >= self.done + self.plan.size(self.chunks):
            pieces.append(self._chunk(self.done + self.plan.size(self.chunks), last=False))
        return pieces

    def finish(self) -> list[np.ndarray]:
        """The segment's codes are complete -> the remaining audio pieces (the last chunk and/or the tail)."""
        pieces = []
        if self.fed > self.done:
            pieces.append(self._chunk(self.fed, last=True))
        elif self.tail is not None:
            pieces.append(self.tail)
        self.tail = None
        return [p for p in pieces if p.size]

    def _chunk(self, end: int, last: bool) -> np.ndarray:
        """Decode codes [done, end) with left context; returns the audio ready now, holds back the new tail."""
        start = self.done
        ctx = max(0, start - self.plan.overlap_codes)
        codes = np.concatenate(self.codes)[ctx:end]
        latent = np.concatenate(self.latent, axis=1)[:, ctx:end] if self.latent else None
        wav = self.decode_span(codes, latent, ctx, end)  # audio of frames [f(ctx), f(end))
        hop, f = self.hop, self.grid
        head = (f(start) - f(ctx)) * hop  # samples of the context frames
        out = wav[head:]
        if self.tail is not None:  # the context frames overlap the held-back tail: cross-fade them
            out = np.concatenate([crossfade(self.tail, wav[:head], self.plan.fade), out])
        # hold back the frames the next chunk will re-decode as its context (none after the last chunk)
        keep = 0 if last else (f(end) - f(end - self.plan.overlap_codes)) * hop
        self.tail = out[out.shape[0] - keep:] if keep else None
        self.done, self.chunks = end, self.chunks + 1
        return out[:out.shape[0] - keep]

    def decode_span(self, codes: np.ndarray, latent: np.ndarray | None, first: int, end: int) -> np.ndarray:
        """Codes [first, end) of the segment (end - first,) with latent (1, end - first, d; None for 2.5) ->
        float32 audio of frames [f(first), f(end)) of the segment grid ((f(end) - f(first)) * hop samples)."""
        f = self.grid
        noise = noise_columns(self.noise, self.spk.ref_mel.shape[2], f(first), f(end))
        t0 = time.perf_counter()
        mel = self.mel.decode(codes, latent, self.spk, noise, self.steps, self.cfg_rate, frames=f(end) - f(first))
        mel = require_finite("mel decoding", np.ascontiguousarray(mel))
        t1 = time.perf_counter()
        wav = require_finite("vocoder", self.vocoder.run({"mel": mel})[0][0])
        self.mel_s, self.vocoder_s = self.mel_s + t1 - t0, self.vocoder_s + time.perf_counter() - t1
        return wav
