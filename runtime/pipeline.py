"""`IndexTTS2`: the public object. Loads a bundle and runs the pipeline stage by stage.

    front end -> conditioning (speaker latent, emotion vector) -> code generation -> mel -> vocoder

This module only orchestrates; the work lives in `audio`, `text`, `prompt`, `conditioning`, `gpt`,
`sampling`, `s2mel` and `sessions`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .audio import (CAMPPLUS_MIN_FRAMES, emotion_waveform, kaldi_fbank, load_audio, log_mel, require_voice,
                    seamless_features, speaker_waveforms)
from .conditioning import check_alpha, check_vector, merge, pick_rows, scale_vector, vector_emovec
from .errors import BundleError, GenerationError, InputError, non_finite, require_finite
from .chunked import ChunkedDecoder, prompt_tail
from .gpt import CodeGenerator
from .integrity import BundleTables, ChecksumJob, check_decoder, graph_data_files
from .manifest import Manifest, load_manifest
from .options import AudioSource, SynthesisOptions, call_options
from .presets import DEFAULT_PRESET, LIMITS, UPSTREAM_MAX_CODES, check_optional, resolve_max_codes
from .prompt import PromptEncoder
from .results import AudioChunk, Metrics, SynthesisResult
from .s2mel import MelDecoder, cfm_noise, target_frames
from .sampling import NonFiniteScores, SamplingOptions
from .sessions import Graph, providers_for
from .speaker import Speaker, check_semantic_frames
from .text import DEFAULT_MAX_CHARS

_LOG = logging.getLogger(__name__)

GRAPHS = ("gpt_speaker_conditioning", "gpt_emotion_vector", "gpt_decoder", "semantic_encoder", "semantic_codec",
          "campplus", "length_regulator", "latent_projector", "dit", "bigvgan")

SEGMENT_GAP_S = 0.2  # upstream joins segments with 200 ms of silence

__all__ = ["IndexTTS2", "AudioSource", "load_bundle", "GRAPHS"]

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


def no_codes() -> GenerationError:
    """A segment for which the GPT produced the stop token first: nothing to speak."""
    return GenerationError("the GPT stopped before producing any code for a segment",
                           "try another seed or rephrase the text")


def source_name(source, role: str) -> str:
    """How errors name an audio input: 'speaker audio ref.wav', or 'speaker audio (array)'."""
    return f"{role} (array)" if isinstance(source, tuple) else f"{role} {source}"


def load_bundle(bundle: str | Path, device: str = "cpu", threads: int | None = None,
                max_text_chars: int = DEFAULT_MAX_CHARS,
                verify: bool = True) -> tuple[Manifest, dict[str, Graph], BundleTables]:
    """A bundle's manifest, opened graphs and tables, every integrity check passed (IndexTTS2's
    arguments; any failure is a BundleError, a bad argument an InputError)."""
    threads = check_optional("threads", threads)  # bad arguments fail before any file is read
    providers = providers_for(device)
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    missing = [name for name in GRAPHS if name not in manifest.graphs]
    if missing:
        raise BundleError(f"{bundle}: the bundle has no {', '.join(missing)} graph",
                          "re-export it with this version of indextts2-onnx")
    for name in GRAPHS:
        target = manifest.graphs[name].device
        if target not in ("any", device):
            _LOG.warning("%s was exported for %s (%s); it runs on %s but slower, or less precisely",
                         name, target, manifest.graphs[name].precision, device)
    # sha256 of every listed file in a background thread while sessions load; leaving the block joins it
    # and raises a mismatch, before this function returns (a failure inside still reports it first)
    with ChecksumJob(bundle, manifest, list(manifest.files) if verify else []):
        for name in GRAPHS:  # weights only from listed files (hashed above), before ONNX Runtime reads any
            graph_data_files(bundle, manifest, name)
        graphs = {name: Graph.open(bundle, name, manifest.graphs[name], providers, threads) for name in GRAPHS}
        check_decoder(bundle, graphs["gpt_decoder"], manifest)
        tables = BundleTables.load(bundle, manifest, max_text_chars)
    return manifest, graphs, tables


class IndexTTS2:
    """An exported IndexTTS2 bundle, ready to generate.

    bundle : folder written by `indextts2-onnx export`
    device : "cpu" or "cuda" (needs onnxruntime-gpu); `providers` lists what ONNX Runtime uses
    threads: intra-op threads per session (None: ONNX Runtime's default, the physical cores)
    max_text_chars: longest text accepted by tokenize / synthesize (longer texts are refused, not cut)
    verify : check the sha256 of every bundle file against the manifest while the sessions load (default);
             False skips only the hashing, for deployments that checked the bundle when installing it.
             Paths, listing, field types and table shapes are always checked; any failure is a BundleError.

    The object holds only what the bundle defines; every call's options and metrics are its own values
    (SynthesisOptions in, AudioChunk / SynthesisResult out), so one instance may serve many threads at
    once (ONNX Runtime sessions run concurrently).
    """

    def __init__(self, bundle: str | Path, device: str = "cpu", threads: int | None = None,
                 max_text_chars: int = DEFAULT_MAX_CHARS, verify: bool = True):
        self._assemble(Path(bundle), *load_bundle(bundle, device, threads, max_text_chars, verify))

    @classmethod
    def from_graphs(cls, manifest: Manifest, graphs: dict[str, Graph], tables: BundleTables,
                    bundle: str | Path | None = None) -> IndexTTS2:
        """An IndexTTS2 over graphs and tables opened already (`load_bundle`, or wrappers of them: any
        object with Graph's `run` and `providers`). Nothing is read or checked here beyond the graph names;
        `bundle` is only recorded (None when there is no folder)."""
        missing = [name for name in GRAPHS if name not in graphs]
        if missing:
            raise BundleError(f"from_graphs: no {', '.join(missing)} graph", f"pass all of {', '.join(GRAPHS)}")
        tts = cls.__new__(cls)
        tts._assemble(None if bundle is None else Path(bundle), manifest, graphs, tables)
        return tts

    def _assemble(self, bundle: Path | None, manifest: Manifest, graphs: dict[str, Graph],
                  tables: BundleTables) -> None:
        """The stage objects over the graphs. Nothing here changes after construction: calls share it."""
        self.bundle = bundle
        self.manifest = manifest
        self._speaker_graph = graphs["gpt_speaker_conditioning"]
        self._emotion_graph = graphs["gpt_emotion_vector"]
        self._codes = CodeGenerator(graphs["gpt_decoder"], tables.gpt, manifest.gpt)
        self._prompt = PromptEncoder(graphs["semantic_encoder"], graphs["semantic_codec"], graphs["campplus"],
                                     graphs["length_regulator"])
        self._mel = MelDecoder(graphs["latent_projector"], graphs["length_regulator"], graphs["dit"])
        self._vocoder = graphs["bigvgan"]
        self._matrices = tables.matrices
        self._tokenizer = tables.tokenizer
        self._mel_filterbank = tables.mel_filterbank
        self._graphs = dict(graphs)

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
        spk = self._prompt.speaker(features, mask, emotion_features, emotion_mask, fbank, ref_mel, STAGES[0])
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
        return check_semantic_frames(name, features)

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

    def tokenize(self, text: str,
                 max_tokens_per_segment: int = SynthesisOptions.max_tokens_per_segment) -> list[list[int]]:
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
        """The GPT's speaker latents (1, 32, d) for `spk`. `stream` computes them once per call and every
        segment reuses them; nothing is memoised on the object, so concurrent calls share no state."""
        latent = self._speaker_graph.run({"semantic": self._semantic(spk.semantic, "Speaker.semantic")})[0]
        return require_finite(STAGES[1], latent)

    def generate_codes(self, token_ids, spk: Speaker, emovec: np.ndarray, greedy: bool = False,
                       num_beams: int = DEFAULT_PRESET.num_beams, top_k: int = DEFAULT_PRESET.top_k,
                       top_p: float = DEFAULT_PRESET.top_p, temperature: float = DEFAULT_PRESET.temperature,
                       repetition_penalty: float = DEFAULT_PRESET.repetition_penalty, max_codes: int | None = None,
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
        Defaults are upstream `infer()`'s (the `default` preset): beam sampling with 3 beams. Bounds: presets.LIMITS."""
        LIMITS["num_beams"].check("num_beams", num_beams)  # refused even where greedy ignores it
        options = SamplingOptions(greedy=greedy, num_beams=1 if greedy else num_beams, top_k=top_k, top_p=top_p,
                                  temperature=temperature, repetition_penalty=repetition_penalty)  # InputError
        codes, latent, _ = self._generate_codes_timed(token_ids, spk, emovec, options, max_codes, seed, min_codes,
                                                      on_codes)
        return codes, latent

    def _generate_codes_timed(self, token_ids, spk: Speaker, emovec: np.ndarray, options: SamplingOptions,
                              max_codes: int | None, seed: int | None, min_codes: int = 0,
                              on_codes: Callable[[np.ndarray], None] | None = None,
                              spk_latent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
        """`generate_codes` with its stage seconds returned as a value: (codes, latent, {conditioning_s,
        decode_s, latent_s}). `spk_latent`: the Speaker's latents when the caller computed them already."""
        d = self.manifest.gpt
        spk = self._check_speaker(spk)
        ids = self._check_tokens(token_ids)
        max_codes = resolve_max_codes(max_codes, UPSTREAM_MAX_CODES, d.max_mel_tokens)
        min_codes = LIMITS["min_codes"].check("min_codes", min_codes, max_codes)
        check_optional("seed", seed)
        emovec = finite_input("emovec", emovec)
        if emovec.shape != (1, d.model_dim):
            raise InputError(f"emovec: expected shape (1, {d.model_dim}), got {emovec.shape}",
                             "use IndexTTS2.emotion_vector")
        t0 = time.perf_counter()
        if spk_latent is None:
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
        if codes.shape[0] == 0:
            _LOG.warning("the GPT produced the stop token first: no codes for this segment")
        return codes, latent, {"conditioning_s": t1 - t0, "decode_s": t2 - t1, "latent_s": t3 - t2}

    # --- mel and waveform ------------------------------------------------------------------------

    def decode_mel(self, codes: np.ndarray, latent: np.ndarray, spk: Speaker, steps: int = DEFAULT_PRESET.steps,
                   cfg_rate: float = DEFAULT_PRESET.cfg_rate, noise: np.ndarray | None = None,
                   seed: int | None = None) -> np.ndarray:
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
            noise = cfm_noise(seed, a.n_mels, total)  # frame by frame, as the chunked path and torch side draw it
        noise = finite_input("noise", noise)
        if noise.shape != shape:
            raise InputError(f"noise: expected shape {shape} (prompt + target frames), got {noise.shape}")
        return require_finite(STAGES[4], self._mel.decode(codes, latent, spk, noise, int(steps), float(cfg_rate)))

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """BigVGAN: mel (1, n_mels, T) -> float32 waveform (hop_length * T,) in [-1, 1]."""
        mel = finite_input("mel", mel)
        a = self.manifest.acoustic
        if mel.ndim != 3 or mel.shape[:2] != (1, a.n_mels) or mel.shape[2] == 0:
            raise InputError(f"mel: expected shape (1, {a.n_mels}, frames), got {mel.shape}")
        return require_finite(STAGES[5], self._vocoder.run({"mel": mel})[0][0])

    # --- text to speech --------------------------------------------------------------------------

    def stream(self, text: str, speaker: AudioSource | Speaker, options: SynthesisOptions | None = None, *args,
               **overrides) -> Iterator[AudioChunk]:
        """Speak `text` in the voice of `speaker` (audio or a Speaker) as AudioChunks, in order, as soon as
        each is vocoded: each segment's codes are cut into chunks (options.chunk_plan(): a small first
        chunk, then larger ones) that go through the latent pass, s2mel and BigVGAN while the GPT goes on;
        chunks of a segment are cross-faded, segments are separated by 200 ms of silence. The codes are
        those of `synthesize` with the same seed; the audio differs slightly at chunk scale, since the
        length regulator and the DiT see one chunk at a time (README "Streaming"). The last chunk is
        `final`. With `chunked=False`, one chunk per segment, each decoded whole. Every segment's first
        chunk but the first segment's starts with the 200 ms of silence: the chunks concatenated are the
        whole utterance.

        options  : a SynthesisOptions (None: the defaults, upstream infer()'s); keyword `overrides` replace
                   single fields (`steps=10`). A third positional argument that is not a SynthesisOptions
                   is `emotion_audio`, and later ones follow 0.x's order (options.POSITIONAL_0X).
        Every option is checked and the text tokenised before this returns, so bad input fails at once;
        the audio work runs as the chunks are consumed, and stops when the consumer stops (closing the
        iterator). A stage producing NaN or inf raises GenerationError naming it."""
        opts = call_options(options, args, overrides).resolve(self.manifest.gpt.max_mel_tokens)
        segments = self.tokenize(text, opts.max_tokens_per_segment)
        return self._chunks(segments, speaker, opts, chunked=opts.chunked)

    def synthesize(self, text: str, speaker: AudioSource | Speaker, options: SynthesisOptions | None = None,
                   *args, **overrides) -> SynthesisResult:
        """The whole text as one float32 waveform in [-1, 1], each segment decoded whole (upstream's
        result), segments joined with 200 ms of silence, and the call's metrics. Arguments as `stream`'s;
        the result unpacks as `sr, wav` too."""
        opts = call_options(options, args, overrides).resolve(self.manifest.gpt.max_mel_tokens)
        segments = self.tokenize(text, opts.max_tokens_per_segment)
        chunks = list(self._chunks(segments, speaker, opts, chunked=False))
        sr = self.manifest.acoustic.sample_rate
        return SynthesisResult(np.concatenate([c.audio for c in chunks]), sr, chunks[-1].metrics)

    def _chunks(self, segments: list[list[int]], speaker: AudioSource | Speaker, o: SynthesisOptions,
                chunked: bool) -> Iterator[AudioChunk]:
        """The audio work of one call with resolved options `o`: a plain generator, so work happens only as
        the consumer asks for chunks. One chunk per segment, or (`chunked`) per ChunkedDecoder piece, with
        200 ms of silence prepended to the first chunk of every segment but the first. Metrics accumulate
        in local values and every chunk carries the call's totals so far."""
        t0 = time.perf_counter()
        spk = self.prepare_speaker(speaker)
        emovec = self.emotion_vector(spk, o.emotion_audio, o.emotion_alpha, o.emotion_vector, seed=o.seed)
        t1 = time.perf_counter()
        spk_latent = self._speaker_latent(spk)  # once per call, shared by every segment
        m = Metrics(prompt_s=t1 - t0, conditioning_s=time.perf_counter() - t1)
        seeds = np.random.default_rng(o.seed).integers(0, 2**31, size=(len(segments), 2))
        sr = self.manifest.acoustic.sample_rate
        gap = np.zeros(int(sr * SEGMENT_GAP_S), dtype=np.float32)
        index = 0
        for i, (ids, (s_codes, s_noise)) in enumerate(zip(segments, seeds)):
            last_segment = i == len(segments) - 1
            pieces = (self._segment_pieces if chunked else self._segment_whole)(
                ids, spk, emovec, spk_latent, o, int(s_codes), int(s_noise))
            first = True
            for wav, timings, final_piece in pieces:
                now = time.perf_counter()
                m = replace(m, **{k: getattr(m, k) + v for k, v in timings.items()},
                            audio_s=m.audio_s + wav.shape[0] / sr, total_s=now - t0,
                            ttfa_s=m.ttfa_s if index else now - t0)
                audio = np.concatenate([gap, wav]) if first and i else wav
                yield AudioChunk(audio, sr, segment=i, index=index, final=last_segment and final_piece, metrics=m)
                first, index = False, index + 1

    def _segment_whole(self, ids, spk, emovec, spk_latent, o, s_codes, s_noise):
        """One segment decoded whole: yields (audio, stage seconds, True) once."""
        codes, latent, t = self._generate_codes_timed(ids, spk, emovec, o.sampling(), o.max_codes, s_codes,
                                                      o.min_codes, spk_latent=spk_latent)
        if codes.shape[0] == 0:
            raise no_codes()
        t2 = time.perf_counter()
        mel = self.decode_mel(codes, latent, spk, o.steps, o.cfg_rate, seed=s_noise)
        t3 = time.perf_counter()
        wav = self.vocode(mel)
        t["mel_s"], t["vocoder_s"], t["codes"] = t3 - t2, time.perf_counter() - t3, int(codes.shape[0])
        yield wav, t, True

    def _segment_pieces(self, ids, spk, emovec, spk_latent, o, s_codes, s_noise):
        """One segment decoded in chunks while the GPT decodes: yields (audio, stage seconds since the
        previous piece, is_last) per piece. The GPT's runs of final codes (CodeGenerator.runs) feed a
        ChunkedDecoder whose latent rows come from the incremental latent pass (exact); its noise is
        drawn for the longest possible segment (cfm_noise: the first frames equal the non-streamed draw)."""
        a, ids = self.manifest.acoustic, self._check_tokens(ids)
        t0 = time.perf_counter()
        prefix = self._codes.prefix(spk_latent, emovec)
        lat = self._codes.latent_stream(prefix, ids)
        spent = {"conditioning_s": time.perf_counter() - t0, "decode_s": 0.0, "latent_s": 0.0, "codes": 0}

        def latents(codes: np.ndarray) -> np.ndarray:
            t = time.perf_counter()
            rows = require_finite(STAGES[3], lat.extend(codes))
            spent["latent_s"] += time.perf_counter() - t
            return rows

        noise = cfm_noise(s_noise, a.n_mels, spk.ref_mel.shape[2] + target_frames(o.max_codes))
        prompt, noise = prompt_tail(spk, noise, o.chunk_prompt_frames)
        dec = ChunkedDecoder(self._mel, self._vocoder, latents, prompt, noise, o.steps, o.cfg_rate, o.chunk_plan(),
                             a.hop_length)
        runs = self._codes.runs(prefix, ids, o.sampling(), o.max_codes, np.random.default_rng(s_codes),
                                min_codes=o.min_codes)
        reported = {"mel_s": 0.0, "vocoder_s": 0.0}

        def delta() -> dict:
            out = dict(spent, mel_s=dec.mel_s - reported["mel_s"], vocoder_s=dec.vocoder_s - reported["vocoder_s"])
            reported.update(mel_s=dec.mel_s, vocoder_s=dec.vocoder_s)
            spent.update({k: 0.0 if k != "codes" else 0 for k in spent})
            return out

        while True:
            t = time.perf_counter()
            try:
                run = next(runs)
            except StopIteration:
                spent["decode_s"] += time.perf_counter() - t
                break
            except NonFiniteScores as e:  # the decoder's logits held NaN / +inf
                raise non_finite(STAGES[3]) from e
            spent["decode_s"] += time.perf_counter() - t
            spent["codes"] += int(run.shape[0])
            for wav in dec.feed(run):
                yield wav, delta(), False
        if dec.fed == 0:
            raise no_codes()
        tail = dec.finish()
        for j, wav in enumerate(tail):
            yield wav, delta(), j == len(tail) - 1
        if not tail:  # the last piece was already out (no overlap, cut at the end): an empty final marker
            yield np.zeros(0, dtype=np.float32), delta(), True
