"""The torch reference pipeline of `indextts2-onnx bench`: eager fp32 torch modules doing the runtime's work.

Built only from our torch modules, loaded strictly from the checkpoint folder (`load_models`), on "cpu" or
"cuda". What is not a neural network is shared with the runtime, so that both sides do identical work and
only the execution of the networks differs: the numpy audio front end (resamplers, SeamlessM4T features,
Kaldi fbank, log-mel with the Slaney bank computed from config.yaml), the tokenizer (the checkpoint's
bpe.model) and the numpy sampler (`make_decoder`: the same algorithm, and its cost is small).

    text_s          Tokenizer.segments -> one segment's ids
    prompt_s        front end; w2v-BERT (speaker and emotion paths), codec quantize, CAMPPlus,
                    length regulator to the prompt's mel frames
    conditioning_s  speaker latent, emotion vector (the speaker is its own emotion prompt), decode prefix
    decode_s        UnifiedVoice.decode WITH a KV cache: one-row prefill, past tiled to the beams, rows
                    reordered by `Step.source_rows` (index_select) each step, the k-th code fed at mel
                    position k+1; the stop token's raw logit is -inf for the first `min_codes` steps
    latent_s        export.reference.latent (upstream's second pass)
    mel_s           vq2emb + gpt_layer, length regulator to int(N * 1.72) frames, cfm_reference from
                    numpy `default_rng(noise_seed)` noise over prompt + target frames, prompt cut off
    vocoder_s       BigVGAN

As a bench worker (started by `indextts2-onnx bench`, prints one JSON object):

    python -m indextts2_onnx.export.torch_pipeline --job JSON
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime.audio import (emotion_waveform, kaldi_fbank, load_audio, log_mel, require_voice, seamless_features,
                             speaker_waveforms)
from ..runtime.bench import (Job, Output, Stopwatch, Workload, check_codes, measure, one_segment, peak_rss_mib,
                             worker_main)
from ..runtime.gpt import ban_early_stop
from ..runtime.s2mel import cfm_noise, target_frames
from ..runtime.sampling import SamplingOptions, make_decoder
from ..runtime.text import Tokenizer
from . import reference
from .bundle import load_models
from .checkpoint import CheckpointPaths
from .config import load_config
from .filterbanks import slaney_mel_filterbank
from .graphs import Models
from .modules.gpt import UnifiedVoice
from .modules.s2mel import cfm_reference


@dataclass
class TorchReference:
    """A checkpoint's torch modules on one device, with the shared front-end assets."""

    models: Models
    device: torch.device
    tokenizer: Tokenizer
    filterbank: np.ndarray  # (n_mels, n_fft // 2 + 1) Slaney bank from config.yaml's s2mel mel settings
    paths: CheckpointPaths

    @staticmethod
    def load(checkpoint: str | Path, device: str = "cpu", progress=lambda msg: None) -> "TorchReference":
        cfg = load_config(Path(checkpoint) / "config.yaml")
        paths = CheckpointPaths.of(checkpoint, cfg)
        models = load_models(paths, cfg, progress)
        dev = torch.device(device)
        for f in fields(models):
            module = getattr(models, f.name)
            if isinstance(module, nn.Module):
                module.to(dev).eval()
        mel = cfg.s2mel.mel  # fmax None means sr / 2, as upstream (and as the exporter writes the bank)
        bank = slaney_mel_filterbank(mel.sample_rate, mel.n_fft, mel.n_mels, mel.fmin, mel.fmax)
        return TorchReference(models, dev, Tokenizer.load(paths.bpe), bank, paths)

    @property
    def sample_rate(self) -> int:
        return self.models.bigvgan.cfg.sampling_rate

    def sync(self) -> None:
        """Wait for queued CUDA kernels, so that a stage's time is its own."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)


@dataclass(frozen=True)
class TorchSpeaker:
    """The torch counterpart of the runtime's `Speaker` (same five arrays, as tensors on the device)."""

    semantic: torch.Tensor  # (1, T, semantic_dim)
    emotion_semantic: torch.Tensor  # (1, T', semantic_dim)
    style: torch.Tensor  # (1, style_dim)
    ref_mel: torch.Tensor  # (1, n_mels, F)
    prompt_condition: torch.Tensor  # (1, F, content_dim)


@dataclass(frozen=True)
class Conditioning:
    """What the GPT is conditioned on: the prefill embeddings and the pieces the latent pass re-uses."""

    speaker_latent: torch.Tensor  # (1, 32, d)
    emovec: torch.Tensor  # (1, d)
    prefill: torch.Tensor  # (1, 34 + L + 3, d)
    fake_ids: list[int]  # upstream's fake input ids (all 1, last = start mel token), for the penalty


@torch.no_grad()
def prepare_speaker(ref: TorchReference, voice: str | Path) -> TorchSpeaker:
    """Voice file -> TorchSpeaker: the runtime's numpy front end, then the torch encoders."""
    m = ref.models
    wav, sr = load_audio(voice)
    require_voice(wav, "speaker audio")
    audio_22k, audio_16k = speaker_waveforms(wav, sr)
    features, mask = seamless_features(audio_16k)
    emo_features, emo_mask = seamless_features(emotion_waveform(wav, sr))
    fbank = kaldi_fbank(audio_16k).astype(np.float32)
    fbank = fbank - fbank.mean(axis=0, keepdims=True)  # upstream: fbank minus its time mean
    ref_mel = ref.tensor(log_mel(audio_22k, ref.filterbank).astype(np.float32))  # (1, n_mels, F)
    semantic = m.semantic_encoder(ref.tensor(features.astype(np.float32)), ref.tensor(mask).long())
    _, s_ref = m.codec.quantize(semantic)
    emotion = m.semantic_encoder(ref.tensor(emo_features.astype(np.float32)), ref.tensor(emo_mask).long())
    style = m.campplus(ref.tensor(fbank)[None])
    prompt_condition = m.length_regulator(s_ref, torch.tensor(ref_mel.shape[2], device=ref.device))
    return TorchSpeaker(semantic, emotion, style, ref_mel, prompt_condition)


@torch.no_grad()
def conditioning(gpt: UnifiedVoice, spk: TorchSpeaker, text_ids: list[int]) -> Conditioning:
    """Speaker latent, the speaker's own emotion vector (alpha 1) and the decode prefix of `text_ids`."""
    speaker_latent = gpt.speaker_latent(spk.semantic)
    emovec = gpt.emotion_vector(spk.emotion_semantic)
    prefill, fake_ids = reference.decode_prefix(gpt, speaker_latent, emovec, text_ids)
    return Conditioning(speaker_latent, emovec, prefill, fake_ids)


@torch.no_grad()
def generate_codes(gpt: UnifiedVoice, cond: Conditioning, options: SamplingOptions, max_codes: int,
                   rng: np.random.Generator, min_codes: int = 0) -> np.ndarray:
    """The runtime's decode loop (runtime/gpt.py `CodeGenerator.generate`) with torch's KV cache.

    Returns int64 (N,) codes cut before the first stop token. The step count, the cache handling (tile
    after a one-row prefill, reorder only when rows move) and the sampler calls are the runtime's."""
    c = gpt.cfg
    device = cond.prefill.device
    decoder = make_decoder(options, prompt_ids=cond.fake_ids, eos_id=c.stop_mel_token, max_new_tokens=max_codes,
                           rng=rng)
    rows = decoder.rows
    logits, _, past = gpt.decode(cond.prefill, gpt.empty_past(1))
    tile = torch.zeros(rows, dtype=torch.long, device=device)
    past = [p.index_select(0, tile) for p in past]  # every beam starts from the same prefix
    logits = logits.repeat(rows, 1)  # (rows, V)
    for k in range(1, max_codes + 1):
        scores = logits.float().cpu().numpy()  # the sampler is numpy, as in the runtime
        step = decoder.update(ban_early_stop(scores, k, min_codes, c.stop_mel_token))
        if step.done:
            break
        if not np.array_equal(step.source_rows, np.arange(rows)):
            src = torch.from_numpy(step.source_rows).to(device)
            past = [p.index_select(0, src) for p in past]
        tokens = torch.from_numpy(step.tokens).to(device)[:, None]  # (rows, 1)
        x = gpt.mel_inputs(tokens, torch.tensor([k + 1], device=device))  # the k-th code at mel position k+1
        logits, _, past = gpt.decode(x, past)
    codes = np.asarray(decoder.finalize(), dtype=np.int64)
    stops = np.flatnonzero(codes == c.stop_mel_token)
    return codes[: stops[0]] if stops.size else codes


@torch.no_grad()
def decode_mel(ref: TorchReference, codes: np.ndarray, latent: torch.Tensor, spk: TorchSpeaker, steps: int,
               cfg_rate: float, noise_seed: int) -> torch.Tensor:
    """Mel frames (1, n_mels, int(N * 1.72)): the s2mel stage with the runtime's noise draw for `noise_seed`."""
    m = ref.models
    content = m.codec.vq2emb(ref.tensor(codes)[None]) + m.gpt_layer(latent)  # (1, N, semantic_dim)
    frames = target_frames(codes.shape[0])
    cond = m.length_regulator(content, torch.tensor(frames, device=ref.device))  # (1, frames, C)
    mu = torch.cat([spk.prompt_condition, cond], dim=1)  # (1, F + frames, C)
    noise = cfm_noise(noise_seed, spk.ref_mel.shape[1], mu.shape[1])  # as decode_mel(seed=)
    x_lens = torch.tensor([mu.shape[1]], device=ref.device)
    mel = cfm_reference(m.dit, mu, x_lens, spk.ref_mel, spk.style, ref.tensor(noise), steps, cfg_rate)
    return mel[..., spk.ref_mel.shape[2]:]


def synthesize(ref: TorchReference, voice: str | Path, w: Workload) -> Output:
    """Voice file + text -> (waveform float32 (samples,), codes int64 (N,), stage seconds incl. total_s).

    The same stages, arguments and seeds as the runtime side (`runtime.bench.synthesize`); tensors are
    created on the reference's device (`torch.device` context) so the modules' own factories land there."""
    gpt = ref.models.gpt
    clock = Stopwatch(ref.sync)
    with torch.no_grad(), ref.device:
        ids = one_segment(ref.tokenizer.segments(w.text), w.text)
        clock.lap("text_s")
        spk = prepare_speaker(ref, voice)
        clock.lap("prompt_s")
        cond = conditioning(gpt, spk, ids)
        clock.lap("conditioning_s")
        codes = generate_codes(gpt, cond, w.sampling(), w.codes, np.random.default_rng(w.seed), min_codes=w.codes)
        clock.lap("decode_s")
        latent = reference.latent(gpt, cond.speaker_latent, cond.emovec, ids, codes.tolist())
        clock.lap("latent_s")
        check_codes(codes, ref.models.cfg.semantic_codec.codebook_size)
        mel = decode_mel(ref, codes, latent, spk, w.steps, w.cfg_rate, w.noise_seed)
        clock.lap("mel_s")
        wav = ref.models.bigvgan(mel)[0, 0].float().cpu().numpy()
        clock.lap("vocoder_s")
    return wav, codes, clock.timings()


def checkpoint_size_mib(paths: CheckpointPaths) -> float:
    """Bytes on disk of every file the reference reads (folders summed), in MiB."""
    total = 0
    for f in fields(paths):
        p = getattr(paths, f.name)
        if f.name == "root":
            continue
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else []
        total += sum(q.stat().st_size for q in files)
    return total / 2**20


def torch_worker(job: Job) -> dict:
    """Bench the torch reference in this process -> its report (the bench's reference row)."""
    if job.threads:
        torch.set_num_threads(job.threads)
    ref, report = measure(job, lambda: TorchReference.load(job.path, job.device), synthesize,
                          lambda r: r.sample_rate)
    cuda = ref.device.type == "cuda"
    return {**report, "size_mib": checkpoint_size_mib(ref.paths),
            "precision": {f.name: "fp32" for f in fields(ref.models) if f.name != "cfg"},
            "providers": [f"torch eager {ref.device.type}"], "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": torch.cuda.max_memory_allocated(ref.device) / 2**20 if cuda else None,
            "gpu": torch.cuda.get_device_name(ref.device) if cuda else None,
            "versions": {"torch": torch.__version__, "python": platform.python_version()}}


if __name__ == "__main__":
    sys.exit(worker_main(worker=torch_worker))
