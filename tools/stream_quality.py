"""How much chunked (streaming) acoustic decoding changes the waveform, per chunk size: a markdown table.

    python tools/stream_quality.py BUNDLE [--chunks 20,40,60,100] [--overlap 5] [--codes 200] [--steps 10]

One fixed voice prompt (the synthetic voice), one fixed code sequence (greedy, exactly --codes codes),
one whole-segment start noise. The reference is the non-streamed decode (IndexTTS2.decode_mel + vocode with
that noise); each row decodes the same codes and latent with runtime.chunked.ChunkedDecoder and that noise.

Columns: SNR (dB) of the streamed waveform against the reference, overall and within +-1 join-width of each
join; mean |log-mel difference| (runtime.audio.log_mel with the bundle's filterbank), overall and at the
joins; time to the first audio piece and total time, as fractions of the non-streamed decode's time.
With random weights (the tiny test bundle) the audio is noise: the numbers say how far chunking moves the
signal from the non-streamed one, not how either sounds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indextts2_onnx.runtime import IndexTTS2
from indextts2_onnx.runtime.audio import log_mel, synthetic_voice
from indextts2_onnx.runtime.chunked import ChunkedDecoder, ChunkPlan, prompt_tail
from indextts2_onnx.runtime.pipeline import load_bundle
from indextts2_onnx.runtime.s2mel import MelDecoder, cfm_noise, target_frames
from indextts2_onnx.runtime.sessions import Graph

TEXT = "Streaming should start speaking long before the whole sentence has been decoded."


def snr_db(ref: np.ndarray, x: np.ndarray) -> float:
    """10 log10(|ref|^2 / |x - ref|^2) over equal-length signals (inf when identical)."""
    err = float(np.sum((x.astype(np.float64) - ref) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / err)


def join_mask(n_samples: int, joins: list[int], width: int) -> np.ndarray:
    """bool (n_samples,): True within `width` samples either side of each join sample."""
    mask = np.zeros(n_samples, bool)
    for j in joins:
        mask[max(0, j - width):j + width] = True
    return mask


@dataclass(frozen=True)
class Row:
    plan: str
    chunks: int
    snr: float
    snr_joins: float
    mel_l1: float
    mel_l1_joins: float
    ttfa: float  # seconds to the first piece
    total: float  # seconds for all pieces


def measure(mel: MelDecoder, vocoder: Graph, hop: int, plan: ChunkPlan, label: str, codes, latent, spk, noise,
            steps: int, ref: np.ndarray, bank: np.ndarray) -> Row:
    dec = ChunkedDecoder(mel, vocoder, lambda c: None, spk, noise, steps, 0.7, plan, hop)
    dec.latents = _slicer(latent)
    t0 = time.perf_counter()
    pieces, first = [], None
    for b0, b1 in zip(plan.boundaries(len(codes))[:-1], plan.boundaries(len(codes))[1:]):
        pieces += dec.feed(codes[b0:b1])  # codes arrive chunk by chunk (timings exclude the GPT)
        if first is None and pieces:
            first = time.perf_counter() - t0
    pieces += dec.finish()
    total = time.perf_counter() - t0
    wav = np.concatenate(pieces)
    assert wav.shape == ref.shape, (wav.shape, ref.shape)
    cuts = plan.boundaries(len(codes))[1:-1]
    joins = [target_frames(b) * hop for b in cuts]
    width = max(1, target_frames(plan.overlap_codes)) * hop
    mask = join_mask(ref.shape[0], joins, width)
    d = np.abs(log_mel(wav, bank) - log_mel(ref, bank))[0]  # (80, T)
    fmask = join_mask(d.shape[1], [j // hop for j in joins], width // hop)
    return Row(label, len(cuts) + 1, snr_db(ref, wav), snr_db(ref[mask], wav[mask]) if mask.any() else float("nan"),
               float(d.mean()), float(d[:, fmask].mean()) if fmask.any() else float("nan"),
               first if first is not None else total, total)


def _slicer(latent: np.ndarray):
    """latents callback over a precomputed (1, N, d) latent: hands out consecutive rows."""
    state = {"i": 0}

    def take(codes: np.ndarray) -> np.ndarray:
        i = state["i"]
        state["i"] = i + len(codes)
        return latent[:, i:i + len(codes)]
    return take


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--chunks", default="20,40,60,100", help="fixed chunk sizes in codes (comma-separated)")
    ap.add_argument("--overlap", default="5", help="overlap codes (comma-separated to sweep)")
    ap.add_argument("--codes", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fade", default="hann", help="hann, linear, or both")
    ap.add_argument("--growing", default="25,100,2", help="also a growing plan first,max,growth ('' to skip)")
    ap.add_argument("--prompt-seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--prompt-frames", default="", help="also the default growing plan with the chunks conditioned "
                    "on the last N prompt frames (chunked.prompt_tail), comma-separated N")
    a = ap.parse_args(argv)

    manifest, graphs, tables = load_bundle(a.bundle, threads=a.threads, verify=False)
    tts = IndexTTS2.from_graphs(manifest, graphs, tables, bundle=a.bundle)
    mel = MelDecoder(graphs["latent_projector"], graphs["length_regulator"], graphs["dit"])
    sr = tts.manifest.acoustic.sample_rate
    spk = tts.prepare_speaker((synthetic_voice(a.prompt_seconds, sr), sr))
    emovec = tts.emotion_vector(spk)
    ids = tts.tokenize(TEXT)[0]
    codes, latent = tts.generate_codes(ids, spk, emovec, greedy=True, max_codes=a.codes, min_codes=a.codes)
    noise = cfm_noise(a.seed, tts.manifest.acoustic.n_mels, spk.ref_mel.shape[2] + target_frames(len(codes)))
    t0 = time.perf_counter()
    ref = tts.vocode(tts.decode_mel(codes, latent, spk, a.steps, 0.7, noise=noise))
    full_s = time.perf_counter() - t0
    bank = tables.mel_filterbank

    fades = ["hann", "linear"] if a.fade == "both" else [a.fade]
    plans = []
    for ov in (int(x) for x in a.overlap.split(",")):
        for fade in fades:
            for c in (int(x) for x in a.chunks.split(",")):
                plans.append((f"fixed {c}, overlap {ov}, {fade}", ChunkPlan(c, c, ov, 1.0, fade)))
            if a.growing:
                f, m, g = a.growing.split(",")
                plans.append((f"grow {f}x{g}->{m}, overlap {ov}, {fade}", ChunkPlan(int(f), int(m), ov, float(g), fade)))
    for n in (int(x) for x in a.prompt_frames.split(",") if x):
        plans.append((f"default plan, last {n} prompt frames", ChunkPlan(), n))
    plans = [p if len(p) == 3 else (*p, None) for p in plans]
    print(f"{len(codes)} codes, {ref.shape[0] / sr:.2f} s audio, prompt {spk.ref_mel.shape[2]} frames, "
          f"{a.steps} CFM steps; non-streamed decode_mel + vocode {full_s:.2f} s\n")
    print("| plan | chunks | SNR dB | SNR dB at joins | log-mel L1 | log-mel L1 at joins | TTFA / full | total / full |")
    print("|---|---|---|---|---|---|---|---|")
    for label, plan, frames in plans:
        prompt, prompt_noise = prompt_tail(spk, noise, frames)
        r = measure(mel, graphs["bigvgan"], tts.manifest.acoustic.hop_length, plan, label, codes, latent, prompt,
                    prompt_noise, a.steps, ref, bank)
        print(f"| {r.plan} | {r.chunks} | {r.snr:.1f} | {r.snr_joins:.1f} | {r.mel_l1:.3f} | {r.mel_l1_joins:.3f} "
              f"| {r.ttfa / full_s:.2f} | {r.total / full_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
