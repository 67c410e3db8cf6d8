"""Emotion from text: upstream's QwenEmotion (a Qwen3 fine-tune) run by the runtime's own decode loop.

Upstream's `QwenEmotion.inference` (qwen-emotion.md) renders a chat prompt (system `文本情感分类`, the
text as the user turn, thinking disabled), lets the model `generate()` an answer with the folder's
generation settings, keeps what follows the last `</think>`, decodes it without special tokens and
parses it into the 8 emotion weights. Here:

    text -> prompt ids (tokenizers, the prompt prefix/suffix the exporter rendered from the template)
         -> qwen_emotion graph: one prefill call, then one call per token over shared KV buffers
            (decoder_graph.SharedKV, the GPT's shared layout), tokens chosen by sampling.py with the
            generation config's settings, stopping at an end-of-turn id or `max_new_tokens`
         -> answer text -> emotion_answer.parse_emotion_answer -> EmotionFromText

No transformers and no template engine at run time: the manifest's `emotion_text` entry holds what the
exporter read from the folder (runtime.manifest.EmotionText).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decoder_graph import SharedKV, shared_binding
from .emotion_answer import parse_emotion_answer
from .errors import BundleError, GenerationError, InputError
from .kv_cache import declared_io
from .manifest import EmotionText, Manifest, bundle_path
from .sampling import DrawFn, NonFiniteScores, SamplingOptions, make_decoder
from .sessions import Graph

_LOG = logging.getLogger(__name__)

MAX_NEW_TOKENS = 512  # default bound on an answer (upstream's 32768 is no bound; answers are ~60 tokens)
MAX_TEXT_CHARS = 2000  # longest emotion text accepted (a description, or the text to speak)
STAGE = "emotion from text"

# transformers' `clean_up_tokenization` (applied to decoded text when tokenizer_config.json asks for it)
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


@dataclass(frozen=True)
class EmotionFromText:
    """What the emotion model made of a text.

    vector: the 8 weights (happy, angry, sad, afraid, disgusted, melancholic, surprised, calm), in [0, 1.2]
    raw   : the model's decoded answer (the text after its last `</think>`), as it came
    parsed: False when `raw` could not be parsed at all (the vector is then calm 1.0, upstream's fallback)
    finished: True when the answer ended at an end-of-turn token, False when `max_new_tokens` cut it
    prompt_tokens, new_tokens: the prompt's length and the tokens generated"""

    vector: tuple[float, ...]
    raw: str
    parsed: bool
    finished: bool
    prompt_tokens: int
    new_tokens: int


def clean_up_spaces(text: str) -> str:
    """transformers' `clean_up_tokenization`: spaces before punctuation and English contractions removed."""
    for old, new in _CLEANUP:
        text = text.replace(old, new)
    return text


class EmotionModel:
    """The emotion model of one bundle: its decoder graph, tokenizer and generation settings. Nothing in it
    changes after construction, so concurrent calls share it (each call has its own KV buffers)."""

    def __init__(self, graph: Graph, tokenizer, entry: EmotionText):
        self.graph, self.tokenizer, self.entry = graph, tokenizer, entry
        # its I/O by role, as the manifest declares them (the GPT decoder's roles: codes = the token ids)
        kv_cache, roles = (graph.entry.kv_cache, graph.entry.roles) if graph.entry is not None else ({}, {})
        if kv_cache.get("layout") != "shared":
            raise BundleError(f"{graph.name}: the manifest declares no shared KV cache for it (kv_cache "
                              f"{json.dumps(kv_cache)}; its decode loop needs layout \"shared\")",
                              "re-export the bundle")
        self.io = io = declared_io(kv_cache, roles, entry.layers)
        missing = [n for n in [io.codes, io.positions, io.seqlens_k, io.total_length, *io.past]
                   if n not in graph.inputs]
        missing += [n for n in [io.logits, *io.present] if n not in graph.outputs]
        if missing:
            raise BundleError(f"{graph.name}: the graph has no {', '.join(map(str, missing[:4]))}"
                              f"{' ...' if len(missing) > 4 else ''} (manifest emotion_text says {entry.layers} "
                              "layers)", "re-export the bundle")
        self.sampling = SamplingOptions(greedy=not entry.do_sample, num_beams=1, top_k=entry.top_k,
                                        top_p=entry.top_p, temperature=entry.temperature,
                                        repetition_penalty=entry.repetition_penalty)

    @staticmethod
    def open(bundle: Path, manifest: Manifest, graph: Graph) -> "EmotionModel":
        """The bundle's emotion model over its opened decoder graph (the tokenizer read and checked here)."""
        from tokenizers import Tokenizer  # the runtime's one use of it

        entry = manifest.emotion_text
        path = bundle_path(bundle, entry.tokenizer, str(bundle / "manifest.json"), "emotion_text.tokenizer")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own exception type
            raise BundleError(f"{path}: cannot read it as a tokenizers JSON file ({e})", "re-export the bundle") from e
        if tokenizer.get_vocab_size(with_added_tokens=True) > entry.vocab_size:
            raise BundleError(f"{path}: {tokenizer.get_vocab_size(with_added_tokens=True)} tokens, more than the "
                              f"model's {entry.vocab_size} embedding rows", "re-export the bundle")
        return EmotionModel(graph, tokenizer, entry)

    # --- text ---------------------------------------------------------------------------------------

    def prompt_ids(self, text: str) -> list[int]:
        """Upstream's prompt for `text` as token ids: the chat template around it, tokenised whole (as
        `tokenizer([prompt])` does: special tokens in the template are single ids)."""
        e = self.entry
        return list(self.tokenizer.encode(e.prompt_prefix + text + e.prompt_suffix, add_special_tokens=True).ids)

    def answer(self, generated: np.ndarray) -> str:
        """The generated ids after the last `</think>` (all of them if there is none), decoded without
        special tokens (`</think>` itself is not special in Qwen3's tokenizer, hence the cut)."""
        ids = [int(i) for i in generated]
        think = [i for i, t in enumerate(ids) if t == self.entry.think_end_id]
        text = self.tokenizer.decode(ids[think[-1] + 1:] if think else ids, skip_special_tokens=True)
        return clean_up_spaces(text) if self.entry.clean_up_tokenization_spaces else text

    # --- decoding -------------------------------------------------------------------------------------

    def _run(self, kv: SharedKV, ids: np.ndarray) -> np.ndarray:
        """One decoder call: ids (n,) appended to the sequence in `kv` -> logits (1, V) of the last one."""
        io, n, start = self.io, ids.shape[0], kv.length
        binding = shared_binding(self.graph, io, kv.values, np.array([start]), n, [io.logits])
        binding.bind_cpu_input(io.codes, np.ascontiguousarray(ids[None], dtype=np.int64))
        binding.bind_cpu_input(io.positions, np.arange(start, start + n, dtype=np.int64)[None])
        self.graph.run_bound(binding)
        kv.length += n
        return binding.get_outputs()[0].numpy()

    def generate(self, prompt: list[int], max_new_tokens: int, rng: np.random.Generator | None,
                 draw: DrawFn | None = None, trace: list | None = None) -> np.ndarray:
        """The generated ids (int64, the end-of-turn id last when it came) for the prompt ids, decoded as
        upstream's `generate()` with the folder's settings. `draw` replaces the sampler's random draw
        (tests feed transformers the same draws); `trace` receives each step's logits (1, V)."""
        e = self.entry
        capacity = len(prompt) + max_new_tokens
        kv = SharedKV.empty(len(self.io.past), 1, e.kv_heads, capacity, e.head_dim,
                            self.graph.input_dtype(self.io.past[0]))
        decoder = make_decoder(self.sampling, prompt_ids=prompt, eos_id=e.eos_ids, max_new_tokens=max_new_tokens,
                               rng=rng, draw=draw)
        logits = self._run(kv, np.asarray(prompt, dtype=np.int64))
        while True:
            if trace is not None:
                trace.append(logits)
            try:
                step = decoder.update(logits)
            except NonFiniteScores as err:
                raise GenerationError(f"{STAGE}: the model produced NaN or infinite logits",
                                      "check the bundle with `indextts2-onnx info BUNDLE --check`") from err
            if step.done:
                return decoder.finalize()
            logits = self._run(kv, step.tokens)

    def __call__(self, text: str, seed: int | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
                 draw: DrawFn | None = None) -> EmotionFromText:
        """The emotion of `text` (checked: a non-empty string of at most MAX_TEXT_CHARS characters)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"emotion text must be a non-empty string, got {text!r}",
                             "describe the emotion, e.g. 'a little sad, tired'")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(f"emotion text has {len(text)} characters, more than {MAX_TEXT_CHARS}",
                             "give a shorter description of the emotion")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 1")
        prompt = self.prompt_ids(text)
        if len(prompt) + max_new_tokens > self.entry.max_positions:
            raise InputError(f"emotion text: {len(prompt)} prompt tokens + {max_new_tokens} new ones exceed the "
                             f"model's {self.entry.max_positions} positions", "give a shorter text")
        rng = np.random.default_rng(seed) if self.entry.do_sample else None
        generated = self.generate(prompt, max_new_tokens, rng, draw)
        finished = bool(generated.size) and int(generated[-1]) in self.entry.eos_ids
        raw = self.answer(generated)
        parsed = parse_emotion_answer(raw, text)
        if not parsed.parsed:
            _LOG.warning("emotion from text: the model's answer could not be parsed, using calm 1.0: %r", raw[:200])
        return EmotionFromText(parsed.vector, raw, parsed.parsed, finished, len(prompt), int(generated.size))
