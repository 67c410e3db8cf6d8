"""The torch reference pipeline: eager fp32 torch modules doing the runtime's work, stage by stage.

Built only from our torch modules, loaded strictly from the checkpoint folder (`load_models`), on "cpu" or
"cuda". What is not a neural network is shared with the runtime, so that both sides do identical work and
only the execution of the networks differs: the numpy audio front end (resamplers, SeamlessM4T features,
Kaldi fbank, log-mel with the Slaney bank computed from config.yaml), the tokenizer (the checkpoint's
bpe.model) and the numpy sampler (`make_decoder`: the same algorithm, and its cost is small).

    ref.tokenizer     Tokenizer.segments: the text's BPE ids per segment
    prepare_speaker   front end; w2v-BERT (speaker and emotion paths), codec quantize, CAMPPlus,
                      length regulator to the prompt's mel frames
    emotion_vector    the speaker's own emotion vector (the speaker is its own emotion prompt, alpha 1)
    conditioning      speaker latent, decode prefix
    generate_codes    UnifiedVoice.decode WITH a KV cache: one-row prefill, past tiled to the beams, rows
                      reordered by `Step.source_rows` (index_select) each step, the k-th code fed at mel
                      position k+1; the stop token's raw logit is -inf for the first `min_codes` steps
    export.reference.latent   upstream's second pass
    decode_mel        vq2emb + gpt_layer, length regulator to int(N * 1.72) frames, cfm_reference from
                      numpy `cfm_noise(seed)` noise over prompt + target frames, prompt cut off
    vocode            BigVGAN

For an IndexTTS-2.5 checkpoint (`ref.is_25`): the tokenizer is the tiktoken front end, the prompt condition
regulates the un-quantised features, the prefix is [spk_emb_proj(style) + emovec, 0, 0] with the language
row on the text, there is no latent pass, and decode_mel runs the codec decoder to int(2N * 1.72 * df) frames.

The benchmark's torch worker (`indextts2_onnx.bench.torch_worker`) times these stages; nothing here
knows about the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime.audio import (emotion_waveform, kaldi_fbank, load_audio, log_mel, require_voice, seamless_features,
                             speaker_waveforms)
from ..runtime.gpt import ban_early_stop
from ..runtime.s2mel import cfm_noise, target_frames, target_frames_25
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

    @property
    def is_25(self) -> bool:
        return self.models.cfg.is_25

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
        if cfg.is_25:
            from ..runtime.multilingual import MultilingualTokenizer

            tokenizer = MultilingualTokenizer.load(paths.tokenizer, max_text_tokens=cfg.gpt.max_text_tokens)
        else:
            tokenizer = Tokenizer.load(paths.bpe)
        return TorchReference(models, dev, tokenizer, bank, paths)

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

    speaker_latent: torch.Tensor | None  # (1, 32, d); None for 2.5
    emovec: torch.Tensor  # (1, d)
    prefill: torch.Tensor  # (1, 34 + L + 3, d); 2.5: (1, 3 + L + 3, d)
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
    s_ref = semantic if ref.is_25 else m.codec.quantize(semantic)[1]  # 2.5: the un-quantised features
    emotion = m.semantic_encoder(ref.tensor(emo_features.astype(np.float32)), ref.tensor(emo_mask).long())
    style = m.campplus(ref.tensor(fbank)[None])
    prompt_condition = m.length_regulator(s_ref, torch.tensor(ref_mel.shape[2], device=ref.device))
    return TorchSpeaker(semantic, emotion, style, ref_mel, prompt_condition)


@torch.no_grad()
def emotion_vector(gpt: UnifiedVoice, spk: TorchSpeaker) -> torch.Tensor:
    """The speaker's own emotion vector (1, d): the speaker is its own emotion prompt, alpha 1 (as
    `IndexTTS2.emotion_vector(spk)`, which the runtime's `Metrics.prompt_s` times with the speaker)."""
    return gpt.emotion_vector(spk.emotion_semantic)


@torch.no_grad()
def conditioning(gpt: UnifiedVoice, spk: TorchSpeaker, emovec: torch.Tensor, text_ids: list[int],
                 lang_id: int | None = None) -> Conditioning:
    """Speaker latent and the decode prefix of `text_ids` under the emotion vector `emovec` (1, d); 2.5
    (`lang_id` given): the projected style and the language row instead, no speaker latent."""
    if lang_id is not None:
        prefill, fake_ids = reference.campplus_decode_prefix(gpt, spk.style, emovec, text_ids, lang_id)
        return Conditioning(None, emovec, prefill, fake_ids)
    speaker_latent = gpt.speaker_latent(spk.semantic)
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
def decode_mel(ref: TorchReference, codes: np.ndarray, latent: torch.Tensor | None, spk: TorchSpeaker, steps: int,
               cfg_rate: float, seed: int, duration_factor: float = 1.0) -> torch.Tensor:
    """Mel frames (1, n_mels, int(N * 1.72)): the s2mel stage with the runtime's noise draw for `seed`.
    2.5: (1, n_mels, int(2N * 1.72 * duration_factor)) from the codec decoder (latent unused)."""
    m = ref.models
    if ref.is_25:
        content = m.codec.decode(ref.tensor(codes)[None])  # (1, 2N, semantic_dim) at 50 Hz
        frames = target_frames_25(codes.shape[0], duration_factor)
    else:
        content = m.codec.vq2emb(ref.tensor(codes)[None]) + m.gpt_layer(latent)  # (1, N, semantic_dim)
        frames = target_frames(codes.shape[0])
    cond = m.length_regulator(content, torch.tensor(frames, device=ref.device))  # (1, frames, C)
    mu = torch.cat([spk.prompt_condition, cond], dim=1)  # (1, F + frames, C)
    noise = cfm_noise(seed, spk.ref_mel.shape[1], mu.shape[1])  # as IndexTTS2.decode_mel(seed=)
    x_lens = torch.tensor([mu.shape[1]], device=ref.device)
    mel = cfm_reference(m.dit, mu, x_lens, spk.ref_mel, spk.style, ref.tensor(noise), steps, cfg_rate)
    return mel[..., spk.ref_mel.shape[2]:]


@torch.no_grad()
def vocode(ref: TorchReference, mel: torch.Tensor) -> np.ndarray:
    """BigVGAN: mel (1, n_mels, T) -> float32 waveform (hop_length * T,) as a numpy array."""
    return ref.models.bigvgan(mel)[0, 0].float().cpu().numpy()
