"""`IndexTTS2`: the public object. Loads a bundle and runs the pipeline stage by stage.

    front end -> conditioning (speaker latent, emotion vector) -> code generation -> mel -> vocoder

This module only orchestrates; the work lives in `audio`, `text`, `prompt`, `conditioning`, `gpt`,
`sampling`, `s2mel` and `sessions`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np

from .audio import (CAMPPLUS_MIN_FRAMES, emotion_waveform, kaldi_fbank, load_audio, log_mel, require_voice,
                    seamless_features, speaker_waveforms)
from .conditioning import check_alpha, check_vector, merge, pick_rows, scale_vector, vector_emovec
from .errors import BundleError, GenerationError, InputError, non_finite, require_finite
from .gpt import CodeGenerator
from .integrity import BundleTables, ChecksumJob, check_decoder, graph_data_files
from .manifest import Manifest, load_manifest
from .presets import LIMITS, UPSTREAM_MAX_CODES, check_optional, load_preset, resolve_max_codes
from .prompt import PromptEncoder
from .s2mel import MelDecoder, target_frames
from .sampling import NonFiniteScores, SamplingOptions
from .sessions import Graph, providers_for
from .speaker import MAX_SEMANTIC_FRAMES, Speaker
from .text import DEFAULT_MAX_CHARS

_LOG = logging.getLogger(__name__)

GRAPHS = ("gpt_speaker_conditioning", "gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "semantic_codec",
          "campplus", "length_regulator", "latent_projector", "dit", "bigvgan")

SEGMENT_GAP_S = 0.2  # upstream joins segments with 200 ms of silence

AudioSource = Union[str, Path, tuple]  # a file soundfile reads, or (samples, sample_rate)

# The stages the output guard names (errors.require_finite) when a result holds NaN / inf.
STAGES = ("speaker preparation", "speaker conditioning", "emotion vector", "code generation", "mel decoding",
          "vocoder")

def finite_input(name: str, array, dtype=np.float32) -> np.ndarray:
    """An argument as a `dtype` array, or InputError naming it when it is not numeric or not finite."""
    try:
        arr = np.asarray(array, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: not a numeric array ({e})") from e
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


def source_name(source, role: str) -> str:
    """How errors name an audio input: 'speaker audio ref.wav', or 'speaker audio (array)'."""
    return f"{role} (array)" if isinstance(source, tuple) else f"{role} {source}"


def join_segments(chunks: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """Segment waveforms joined with 200 ms of silence between them, as upstream joins them."""
    gap = np.zeros(int(sample_rate * SEGMENT_GAP_S), dtype=np.float32)
    parts = [chunks[0]]
    for wav in chunks[1:]:
        parts += [gap, wav]
    return np.concatenate(parts)


class IndexTTS2:
    """An exported IndexTTS2 bundle, ready to generate.

    bundle : folder written by `indextts2-onnx export`
    device : "cpu" or "cuda" (needs onnxruntime-gpu); `providers` lists what ONNX Runtime uses
    threads: intra-op threads per session (None: ONNX Runtime's default, the physical cores)
    max_text_chars: longest text accepted by tokenize / synthesize (longer texts are refused, not cut)
    verify : check the sha256 of every bundle file against the manifest while the sessions load (default);
             False skips only the hashing, for deployments that checked the bundle when installing it.
             Paths, listing, field types and table shapes are always checked; any failure is a BundleError.
    """

    def __init__(self, bundle: str | Path, device: str = "cpu", threads: int | None = None,
                 max_text_chars: int = DEFAULT_MAX_CHARS, verify: bool = True):
        threads = check_optional("threads", threads)  # bad arguments fail before any file is read
        providers = providers_for(device)
        self.bundle = Path(bundle)
        self.manifest: Manifest = load_manifest(self.bundle)
        missing = [name for name in GRAPHS if name not in self.manifest.graphs]
        if missing:
            raise BundleError(f"{self.bundle}: the bundle has no {', '.join(missing)} graph",
                              "re-export it with this version of indextts2-onnx")
        for name in GRAPHS:
            target = self.manifest.graphs[name].device
            if target not in ("any", device):
                _LOG.warning("%s was exported for %s (%s); it runs on %s but slower, or less precisely",
                             name, target, self.manifest.graphs[name].precision, device)
        # sha256 of every listed file in a background thread while sessions load; leaving the block joins it
        # and raises a mismatch, before this constructor returns (a failure inside still reports it first)
        with ChecksumJob(self.bundle, self.manifest, list(self.manifest.files) if verify else []):
            for name in GRAPHS:  # weights only from listed files (hashed above), before ONNX Runtime reads any
                graph_data_files(self.bundle, self.manifest, name)
            graphs = {name: Graph.open(self.bundle, name, self.manifest.graphs[name], providers, threads)
                      for name in GRAPHS}
            check_decoder(self.bundle, graphs["gpt_decoder"], self.manifest)
            tables = BundleTables.load(self.bundle, self.manifest, max_text_chars)
        self._speaker_graph = graphs["gpt_speaker_conditioning"]
        self._emotion_graph = graphs["gpt_emotion_vector"]
        self._codes = CodeGenerator(graphs["gpt_decoder"], tables.gpt, self.manifest.gpt)
        self._prompt = PromptEncoder(graphs["semantic_encoder"], graphs["semantic_codec"], graphs["campplus"],
                                     graphs["length_regulator"])
        self._mel = MelDecoder(graphs["latent_projector"], graphs["length_regulator"], graphs["dit"])
        self._vocoder = graphs["bigvgan"]
        self._matrices = tables.matrices
        self._tokenizer = tables.tokenizer
        self._mel_filterbank = tables.mel_filterbank
        self._graphs = graphs
        self._latent_memo: tuple[np.ndarray, np.ndarray] | None = None
        self.metrics: dict[str, float] = {}

    @property
    def providers(self) -> list[str]:
        """Execution providers in use, in priority order (ONNX Runtime may fall back to CPU)."""
        seen: list[str] = []
        for g in self._graphs.values():
            seen += [p for p in g.providers if p not in seen]
        return seen

    # --- voice prompt ----------------------------------------------------------------------------

    def prepare_speaker(self, audio: AudioSource | Speaker) -> Speaker:
        """A voice prompt (file path or (samples, sample_rate)) -> Speaker, as upstream prepares it.

        Speaker path: soxr HQ to 22.05 kHz (cut to 15 s) -> log-mel; torchaudio's sinc resampler to 16 kHz
        -> SeamlessM4T features and Kaldi fbank. Emotion path: soxr HQ straight to 16 kHz (cut to 15 s).
        A Speaker is returned as it is, once its arrays are checked against this bundle's dims."""
        if isinstance(audio, Speaker):
            return self._check_speaker(audio)
        name = source_name(audio, "speaker audio")
        wav, sr = load_audio(audio)
        require_voice(wav, name)
        audio_22k, audio_16k = speaker_waveforms(wav, sr)
        features, mask = seamless_features(audio_16k, name)
        emo_features, emo_mask = seamless_features(emotion_waveform(wav, sr), name)
        fbank = kaldi_fbank(audio_16k, name, min_frames=CAMPPLUS_MIN_FRAMES)
        return self.speaker_from_features(features, mask, emo_features, emo_mask, fbank,
                                          log_mel(audio_22k, self._mel_filterbank, name))

    def speaker_from_features(self, features: np.ndarray, mask: np.ndarray, emotion_features: np.ndarray,
                              emotion_mask: np.ndarray, fbank: np.ndarray, ref_mel: np.ndarray) -> Speaker:
        """The neural half of preparing a voice prompt: front-end features -> Speaker.

        features, mask          : (1, T, 160), (1, T) SeamlessM4T features of the 16 kHz speaker path
        emotion_features, ..mask: the same for the emotion path (soxr to 16 kHz upstream)
        fbank                   : (F, 80) Kaldi fbank of the 16 kHz speaker path (mean not yet removed)
        ref_mel                 : (1, n_mels, F') log-mel of the 22.05 kHz prompt
        Non-finite inputs are an InputError; a non-finite Speaker from finite inputs is the graphs' doing
        (GenerationError, stage "speaker preparation").
        """
        inputs = {"features": features, "emotion_features": emotion_features, "fbank": fbank, "ref_mel": ref_mel}
        features, emotion_features, fbank, ref_mel = (finite_input(k, v) for k, v in inputs.items())
        t0 = time.perf_counter()
        spk = self._prompt.speaker(features, mask, emotion_features, emotion_mask, fbank, ref_mel, STAGES[0])
        self.metrics = {"prompt_s": time.perf_counter() - t0}
        return self._check_speaker(spk)

    def _check_speaker(self, spk, name: str = "spk") -> Speaker:
        """`spk` when it is a Speaker whose arrays fit this bundle (Speaker.check), else InputError."""
        if not isinstance(spk, Speaker):
            raise InputError(f"{name}: expected a Speaker, got {type(spk).__name__}",
                             "use prepare_speaker, Speaker.load or Speaker(...)")
        return spk.check(self.manifest.gpt, self.manifest.acoustic)

    # --- conditioning ----------------------------------------------------------------------------

    def _semantic(self, features: np.ndarray, name: str) -> np.ndarray:
        dim = self.manifest.gpt.semantic_dim
        if features.shape[2] != dim:
            raise InputError(f"{name}: feature width {features.shape[2]}, this model takes {dim}")
        if features.shape[1] > MAX_SEMANTIC_FRAMES:
            raise InputError(
                f"{name}: {features.shape[1]} frames, at most {MAX_SEMANTIC_FRAMES} are supported",
                "cut the voice prompt to 15 s, as upstream does",
            )
        return features

    def _emotion_semantic(self, emotion_audio: AudioSource | Speaker) -> np.ndarray:
        """Emotion-path semantic features of an emotion prompt (a Speaker already holds them)."""
        if isinstance(emotion_audio, Speaker):
            return self._check_speaker(emotion_audio, "emotion_audio").emotion_semantic
        name = source_name(emotion_audio, "emotion audio")
        wav, sr = load_audio(emotion_audio)
        features, mask = seamless_features(emotion_waveform(require_voice(wav, name), sr), name)
        return self._prompt.semantic(features, mask, name)

    def _emovec_of(self, features: np.ndarray, name: str) -> np.ndarray:
        return self._emotion_graph.run({"semantic": self._semantic(features, name)})[0]

    def emotion_vector(self, spk: Speaker, emotion_audio=None, alpha: float = 1.0, vector=None,
                       random_rows: bool = False, seed: int | None = None) -> np.ndarray:
        """The emotion vector (1, d) the GPT is conditioned on, mixed as upstream `infer` does.

        emotion_audio: the emotion prompt: an audio file, (samples, sample_rate), or a Speaker
        alpha        : weight of the emotion prompt (or scale of `vector`)
        vector       : 8 weights (happy, angry, sad, afraid, disgusted, melancholic, surprised, calm);
                       when given, emotion_audio is ignored, as upstream does
        random_rows  : with `vector`, pick random emotion-matrix rows instead of the nearest to the style

        alpha must be finite; as upstream, it is clamped to [0, 1] with `vector`, extrapolates (any finite
        value) with emotion audio, and is ignored without either (conditioning.check_alpha). `vector` needs
        8 finite weights >= 0; sums past 1 are kept, as upstream (conditioning.check_vector).
        """
        spk = self._check_speaker(spk)
        alpha = check_alpha(alpha)
        check_optional("seed", seed)
        w = None if vector is None else scale_vector(check_vector(vector), alpha)
        return require_finite(STAGES[2], self._mix_emotion(spk, emotion_audio, alpha, w, random_rows, seed))

    def _mix_emotion(self, spk: Speaker, emotion_audio, alpha: float, w: np.ndarray | None, random_rows: bool,
                     seed: int | None) -> np.ndarray:
        """Upstream's three emotion sources (conditioning module docstring), arguments already checked."""
        if w is not None:
            rows = pick_rows(self._matrices, spk.style, random_rows, np.random.default_rng(seed))
            own = self._emovec_of(spk.emotion_semantic, "Speaker.emotion_semantic")
            return vector_emovec(w, rows, self._matrices, own)
        if emotion_audio is None:  # the speaker is its own emotion prompt, alpha forced to 1
            return self._emovec_of(spk.emotion_semantic, "Speaker.emotion_semantic")
        base = self._emovec_of(spk.semantic, "Speaker.semantic")
        emo = self._emovec_of(self._emotion_semantic(emotion_audio), "emotion_audio")
        return merge(base, emo, alpha).astype(np.float32)

    # --- text ------------------------------------------------------------------------------------

    def tokenize(self, text: str, max_tokens_per_segment: int = 120) -> list[list[int]]:
        """Normalise, tokenise and segment `text` as upstream does -> per-segment raw BPE id lists."""
        return self._tokenizer.segments(text, max_tokens_per_segment=max_tokens_per_segment)

    # --- code generation -------------------------------------------------------------------------

    def _check_tokens(self, token_ids) -> list[int]:
        d = self.manifest.gpt
        ids = [int(t) for t in np.asarray(token_ids, dtype=np.int64).reshape(-1)]
        if not ids:
            raise InputError("token_ids: empty", "tokenize a non-empty text")
        if min(ids) < 0 or max(ids) > d.number_text_tokens:
            raise InputError(f"token_ids: ids must lie in 0..{d.number_text_tokens}, got {min(ids)}..{max(ids)}")
        if len(ids) > d.max_text_tokens:
            raise InputError(
                f"token_ids: {len(ids)} tokens, the model's text positions allow {d.max_text_tokens}",
                "split the text into segments (tokenize does this)",
            )
        return ids

    def _speaker_latent(self, spk: Speaker) -> np.ndarray:
        """The GPT's speaker latents (1, 32, d) for `spk`, computed once per Speaker (every segment of a
        text reuses them; the memo is keyed on the Speaker's semantic array, which nothing mutates)."""
        memo = self._latent_memo
        if memo is None or memo[0] is not spk.semantic:
            latent = self._speaker_graph.run({"semantic": self._semantic(spk.semantic, "Speaker.semantic")})[0]
            self._latent_memo = memo = (spk.semantic, require_finite(STAGES[1], latent))
        return memo[1]

    def generate_codes(self, token_ids, spk: Speaker, emovec: np.ndarray, greedy: bool = False,
                       num_beams: int = 3, top_k: int = 30, top_p: float = 0.8, temperature: float = 0.8,
                       repetition_penalty: float = 10.0, max_codes: int | None = None,
                       seed: int | None = None, min_codes: int = 0,
                       on_codes: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Semantic codes for one text segment and upstream's latent for them.

        token_ids: one segment's raw BPE ids (no start/stop text tokens)
        max_codes: codes at most; None: upstream's 1500, lowered to the checkpoint's max_mel_tokens
        min_codes: no stop before this many codes (HF `min_new_tokens`; benchmarks fix the length with it)
        on_codes : called with each run of codes as soon as it is final (every step with one row; with
                   beams, once every candidate agrees), before the latent pass; the runs concatenated are
                   the returned codes, and the result is the same with or without it
        Returns codes int64 (N,) cut before the stop token, and the latent float32 (1, N, d).
        Defaults are upstream `infer()`'s: beam sampling with 3 beams. Bounds: presets.LIMITS."""
        d = self.manifest.gpt
        spk = self._check_speaker(spk)
        ids = self._check_tokens(token_ids)
        max_codes = resolve_max_codes(max_codes, UPSTREAM_MAX_CODES, d.max_mel_tokens)
        min_codes = LIMITS["min_codes"].check("min_codes", min_codes, max_codes)
        check_optional("seed", seed)
        LIMITS["num_beams"].check("num_beams", num_beams)  # refused even where greedy ignores it
        emovec = finite_input("emovec", emovec)
        if emovec.shape != (1, d.model_dim):
            raise InputError(f"emovec: expected shape (1, {d.model_dim}), got {emovec.shape}",
                             "use IndexTTS2.emotion_vector")
        options = SamplingOptions(greedy=greedy, num_beams=1 if greedy else num_beams, top_k=top_k, top_p=top_p,
                                  temperature=temperature, repetition_penalty=repetition_penalty)  # InputError
        t0 = time.perf_counter()
        spk_latent = self._speaker_latent(spk)
        prefix = self._codes.prefix(spk_latent, emovec)
        t1 = time.perf_counter()
        try:
            codes = self._codes.generate(prefix, ids, options, max_codes, np.random.default_rng(seed),
                                         min_codes=int(min_codes), on_codes=on_codes)
        except NonFiniteScores as e:  # the decoder's logits held NaN / +inf
            raise non_finite(STAGES[3]) from e
        t2 = time.perf_counter()
        latent = require_finite(STAGES[3], self._codes.latent(prefix, ids, codes))
        t3 = time.perf_counter()
        self.metrics = {
            "conditioning_s": t1 - t0, "decode_s": t2 - t1, "latent_s": t3 - t2,
            "codes": float(codes.shape[0]), "ms_per_code": 1000 * (t2 - t1) / max(codes.shape[0], 1),
        }
        if codes.shape[0] == 0:
            _LOG.warning("the GPT produced the stop token first: no codes for this segment")
        return codes, latent

    # --- mel and waveform ------------------------------------------------------------------------

    def decode_mel(self, codes: np.ndarray, latent: np.ndarray, spk: Speaker, steps: int = 25,
                   cfg_rate: float = 0.7, noise: np.ndarray | None = None, seed: int | None = None) -> np.ndarray:
        """Mel frames (1, n_mels, int(N * 1.72)) for one segment's codes and latent (upstream s2mel).

        noise: the CFM start noise for the whole sequence (1, n_mels, prompt frames + target frames), as
        upstream draws it; None draws it from a generator seeded with `seed`. Bounds: presets.LIMITS."""
        a = self.manifest.acoustic
        spk = self._check_speaker(spk)
        steps = LIMITS["steps"].check("steps", steps)
        cfg_rate = LIMITS["cfg_rate"].check("cfg_rate", cfg_rate)
        check_optional("seed", seed)
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        latent = finite_input("latent", latent)
        n = codes.shape[0]
        if n == 0:
            raise InputError("codes: empty", "the GPT produced no codes for this segment; try another seed")
        if codes.min() < 0 or codes.max() >= a.codebook_size:
            raise InputError(f"codes: ids must lie in 0..{a.codebook_size - 1} (stop token removed)")
        if latent.shape != (1, n, self.manifest.gpt.model_dim):
            raise InputError(f"latent: expected shape (1, {n}, {self.manifest.gpt.model_dim}), got {latent.shape}")
        total = spk.ref_mel.shape[2] + target_frames(n)
        shape = (1, a.n_mels, total)
        if total < a.dit_min_frames:
            raise InputError(f"{total} mel frames in all; the DiT needs at least {a.dit_min_frames}")
        if noise is None:
            noise = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        noise = finite_input("noise", noise)
        if noise.shape != shape:
            raise InputError(f"noise: expected shape {shape} (prompt + target frames), got {noise.shape}")
        t0 = time.perf_counter()
        mel = require_finite(STAGES[4], self._mel.decode(codes, latent, spk, noise, int(steps), float(cfg_rate)))
        self.metrics["mel_s"] = time.perf_counter() - t0
        return mel

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """BigVGAN: mel (1, n_mels, T) -> float32 waveform (hop_length * T,) in [-1, 1]."""
        mel = finite_input("mel", mel)
        a = self.manifest.acoustic
        if mel.ndim != 3 or mel.shape[:2] != (1, a.n_mels) or mel.shape[2] == 0:
            raise InputError(f"mel: expected shape (1, {a.n_mels}, frames), got {mel.shape}")
        t0 = time.perf_counter()
        wav = require_finite(STAGES[5], self._vocoder.run({"mel": mel})[0][0])
        self.metrics["vocoder_s"] = time.perf_counter() - t0
        return wav

    # --- text to speech --------------------------------------------------------------------------

    def stream(self, text: str, speaker: AudioSource | Speaker, emotion_audio: AudioSource | Speaker | None = None,
               emotion_alpha: float = 1.0, emotion_vector=None, seed: int | None = None, steps: int | None = None,
               cfg_rate: float | None = None, greedy: bool = False, num_beams: int | None = None,
               top_k: int | None = None, top_p: float | None = None, temperature: float | None = None,
               repetition_penalty: float | None = None, max_codes: int | None = None,
               max_tokens_per_segment: int = 120, preset: str = "default") -> Iterator[tuple[int, np.ndarray]]:
        """Speak `text` in the voice of `speaker`, one (sample_rate, float32 waveform) chunk per text segment.

        Arguments left as None take the preset's value (default = upstream infer()), max_codes lowered to
        the checkpoint's max_mel_tokens; `seed` makes the whole call reproducible. Every option is checked
        (presets.LIMITS, emotion_alpha, emotion_vector) and the text tokenised before any audio work, so bad
        input fails at once; a stage producing NaN or inf raises GenerationError naming it."""
        p = load_preset(preset).override(steps=steps, cfg_rate=cfg_rate, num_beams=num_beams, top_k=top_k,
                                         top_p=top_p, temperature=temperature,
                                         repetition_penalty=repetition_penalty)  # InputError out of LIMITS
        codes_cap = resolve_max_codes(max_codes, p.max_codes, self.manifest.gpt.max_mel_tokens)
        SamplingOptions(greedy=greedy, num_beams=1 if greedy else p.num_beams, top_k=p.top_k, top_p=p.top_p,
                        temperature=p.temperature, repetition_penalty=p.repetition_penalty)  # checks greedy
        check_alpha(emotion_alpha)
        if emotion_vector is not None:
            check_vector(emotion_vector)
        check_optional("seed", seed)
        segments = self.tokenize(text, max_tokens_per_segment)  # bad text fails before any audio work
        t0 = time.perf_counter()
        spk = self.prepare_speaker(speaker)
        emovec = self.emotion_vector(spk, emotion_audio, emotion_alpha, emotion_vector, seed=seed)
        totals = {"prompt_s": time.perf_counter() - t0}
        seeds = np.random.default_rng(seed).integers(0, 2**31, size=(len(segments), 2))
        sr = self.manifest.acoustic.sample_rate
        for ids, (s_codes, s_noise) in zip(segments, seeds):
            codes, latent = self.generate_codes(ids, spk, emovec, greedy, p.num_beams, p.top_k, p.top_p,
                                                p.temperature, p.repetition_penalty, codes_cap, int(s_codes))
            step = dict(self.metrics)
            if codes.shape[0] == 0:
                raise GenerationError("the GPT stopped before producing any code for a segment",
                                      "try another seed or rephrase the text")
            wav = self.vocode(self.decode_mel(codes, latent, spk, p.steps, p.cfg_rate, seed=int(s_noise)))
            step.update(self.metrics)
            for k, v in step.items():
                totals[k] = totals.get(k, 0.0) + v
            totals["audio_s"] = totals.get("audio_s", 0.0) + wav.shape[0] / sr
            totals["total_s"] = time.perf_counter() - t0
            totals["rtf"] = totals["total_s"] / totals["audio_s"]
            totals["ms_per_code"] = 1000 * totals["decode_s"] / max(totals["codes"], 1.0)
            self.metrics = dict(totals)
            yield sr, wav

    def synthesize(self, text: str, speaker: AudioSource | Speaker, emotion_audio: AudioSource | Speaker | None = None,
                   emotion_alpha: float = 1.0, emotion_vector=None, seed: int | None = None,
                   steps: int | None = None, cfg_rate: float | None = None, greedy: bool = False,
                   num_beams: int | None = None, top_k: int | None = None, top_p: float | None = None,
                   temperature: float | None = None, repetition_penalty: float | None = None,
                   max_codes: int | None = None, max_tokens_per_segment: int = 120,
                   preset: str = "default") -> tuple[int, np.ndarray]:
        """The whole text as one float32 waveform in [-1, 1]: segments joined with 200 ms of silence."""
        chunks = list(self.stream(text, speaker, emotion_audio, emotion_alpha, emotion_vector, seed, steps, cfg_rate,
                                  greedy, num_beams, top_k, top_p, temperature, repetition_penalty, max_codes,
                                  max_tokens_per_segment, preset))
        sr = self.manifest.acoustic.sample_rate
        return sr, join_segments([wav for _, wav in chunks], sr)
