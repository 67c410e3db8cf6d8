"""The emotion-from-text model's folder (upstream's QwenEmotion, qwen-emotion.md) read into a bundle entry.

A checkpoint folder names it in config.yaml (`qwen_emo_path: qwen0.6bemo4-merge/`); it is a Hugging Face
causal-LM folder: config.json, model.safetensors, tokenizer.json, tokenizer_config.json (its chat
template) and generation_config.json. Everything the runtime would otherwise need transformers for is
decided here, once, and written into the manifest (runtime.manifest.EmotionText):

* the prompt: the folder's chat template (chat_template.jinja, else tokenizer_config.json's) rendered as transformers' `apply_chat_template` renders it
  (same Jinja environment), with upstream's system prompt, the emotion text as the user turn,
  `add_generation_prompt=True` and `enable_thinking=False`, split where the text goes;
* the decoding: generation_config.json's values over transformers' defaults (upstream's `generate()`
  passes no sampling arguments), refused where it asks for something the runtime's sampler lacks;
* the special ids: `</think>` from the tokenizer, the end-of-turn ids from the generation config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.manifest import EmotionText
from .checkpoint import CheckpointError
from .config import QwenConfig, qwen_config_from_dict

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.50 saves the template (it wins over the config's)
GENERATION_FILE = "generation_config.json"
BUNDLE_TOKENIZER = "qwen_emotion_tokenizer.json"  # its name in the bundle
SYSTEM_PROMPT = "文本情感分类"  # upstream QwenEmotion's system message ("text emotion classification")
THINK_END = "</think>"

# transformers' GenerationConfig defaults for what the sampler reads (a generation_config.json may be silent)
GENERATION_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
# keys that do not change what upstream's call generates (its max_new_tokens overrides max_length)
GENERATION_IGNORED = {"bos_token_id", "pad_token_id", "eos_token_id", "transformers_version", "_from_model_config",
                      "max_length", "max_new_tokens", "use_cache", "return_dict_in_generate", "output_scores",
                      "output_attentions", "output_hidden_states", "output_logits", "length_penalty",
                      "early_stopping", "num_return_sequences", "decoder_start_token_id", "cache_implementation"}
# keys the sampler does not implement, with the value at which they do nothing
GENERATION_INERT = {"num_beams": 1, "num_beam_groups": 1, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
                    "eta_cutoff": 0.0, "no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": None,
                    "encoder_repetition_penalty": 1.0, "diversity_penalty": 0.0, "penalty_alpha": None,
                    "bad_words_ids": None, "force_words_ids": None, "forced_bos_token_id": None,
                    "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                    "sequence_bias": None, "guidance_scale": None, "renormalize_logits": False,
                    "exponential_decay_length_penalty": None, "temperature_last": False}
_SENTINEL = "\x00emotion text\x00"  # stands for the user text while the template is rendered


@dataclass(frozen=True)
class EmotionFolder:
    """The files of an emotion model folder, checked to exist."""

    root: Path
    config: QwenConfig
    raw_config: dict
    tokenizer: Path
    tokenizer_config: dict  # with its chat_template replaced by chat_template.jinja's where that file exists
    generation: dict


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; the emotion model folder holds config.json, "
                              f"model.safetensors, {TOKENIZER_FILE}, {TOKENIZER_CONFIG_FILE} and {GENERATION_FILE}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read it as JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def read_emotion_folder(folder: str | Path) -> EmotionFolder:
    """The emotion model folder's JSON files (the weights are read by modules.qwen3.load_qwen)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such emotion model folder (pass --qwen-emo DIR, or export without it)")
    tokenizer = folder / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise CheckpointError(f"{tokenizer}: file not found; the emotion model's tokenizer must be a "
                              f"tokenizers JSON file (a fast tokenizer)")
    raw = _read_json(folder / "config.json")
    tokenizer_config = _read_json(folder / TOKENIZER_CONFIG_FILE)
    template = folder / TEMPLATE_FILE
    if template.is_file():  # as transformers' from_pretrained: the separate file takes priority
        try:
            tokenizer_config = {**tokenizer_config, "chat_template": template.read_text(encoding="utf-8")}
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{template}: unreadable ({e})") from e
    return EmotionFolder(folder, qwen_config_from_dict(raw, folder / "config.json"), raw, tokenizer,
                         tokenizer_config, _read_json(folder / GENERATION_FILE))


# --- the prompt --------------------------------------------------------------------------------------------


def _chat_template(tokenizer_config: dict, where: Path) -> str:
    """The template transformers would use: a string, or the one named "default" of a list."""
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise CheckpointError(f"{where}: no chat_template, and no {TEMPLATE_FILE} beside it (the emotion prompt "
                              "is built with it, as upstream does)")
    return template


def _special_tokens(tokenizer_config: dict) -> dict[str, Any]:
    """The special-token variables transformers passes to a template (its `special_tokens_map`)."""
    out: dict[str, Any] = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = tokenizer_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    extra = tokenizer_config.get("additional_special_tokens")
    if isinstance(extra, list) and extra:
        out["additional_special_tokens"] = [t.get("content") if isinstance(t, dict) else t for t in extra]
    return out


def render_chat(template: str, messages: list[dict], variables: dict[str, Any]) -> str:
    """A chat template rendered in the Jinja environment transformers uses for `apply_chat_template`
    (sandboxed, trim_blocks, lstrip_blocks, loop controls, its `tojson`, `raise_exception` and
    `strftime_now`), with add_generation_prompt=True."""
    from datetime import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, tools=None, documents=None,
                                            add_generation_prompt=True, **variables)


def prompt_parts(tokenizer_config: dict, where: Path, system: str = SYSTEM_PROMPT) -> tuple[str, str]:
    """(prefix, suffix) such that prefix + text + suffix is upstream's prompt string for any emotion text:
    messages [system, user = text], generation prompt, thinking disabled. Refused when the template does
    not place the user text verbatim exactly once (then no fixed split exists)."""
    variables = {**_special_tokens(tokenizer_config), "enable_thinking": False}
    messages = [{"role": "system", "content": system}, {"role": "user", "content": _SENTINEL}]
    try:
        rendered = render_chat(_chat_template(tokenizer_config, where), messages, variables)
    except CheckpointError:
        raise
    except Exception as e:  # jinja2's syntax and runtime errors
        raise CheckpointError(f"{where}: its chat_template does not render ({type(e).__name__}: {e})") from e
    if rendered.count(_SENTINEL) != 1:
        raise CheckpointError(f"{where}: the chat_template does not place the user text verbatim once; "
                              "the runtime cannot build the emotion prompt from it")
    prefix, suffix = rendered.split(_SENTINEL)
    return prefix, suffix


# --- decoding ----------------------------------------------------------------------------------------------


def generation_settings(generation: dict, config: dict, where: Path) -> dict[str, Any]:
    """What upstream's `generate()` call decodes with: do_sample, temperature, top_k, top_p,
    repetition_penalty (generation_config.json over transformers' defaults) and the end ids."""
    unsupported = [f"{k}={v!r}" for k, v in generation.items()
                   if k in GENERATION_INERT and v != GENERATION_INERT[k]]
    unknown = sorted(set(generation) - set(GENERATION_DEFAULTS) - GENERATION_IGNORED - set(GENERATION_INERT))
    if unsupported or unknown:
        what = ", ".join(unsupported + [f"{k} (unknown)" for k in unknown])
        raise CheckpointError(f"{where}: {what}: not supported by the runtime's sampler (it does greedy or "
                              f"temperature / top-k / top-p sampling with a repetition penalty)")
    out = {k: generation.get(k, v) for k, v in GENERATION_DEFAULTS.items()}
    out = {k: (v if v is not None else GENERATION_DEFAULTS[k]) for k, v in out.items()}
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    eos = [eos] if isinstance(eos, int) else eos
    if not isinstance(eos, list) or not eos or not all(isinstance(i, int) and i >= 0 for i in eos):
        raise CheckpointError(f"{where}: no eos_token_id (generation_config.json or config.json): decoding "
                              "would never stop at the end of the answer")
    checks = [("do_sample", isinstance(out["do_sample"], bool)),
              ("temperature", isinstance(out["temperature"], (int, float)) and out["temperature"] > 0),
              ("top_k", isinstance(out["top_k"], int) and out["top_k"] >= 0),
              ("top_p", isinstance(out["top_p"], (int, float)) and 0 < out["top_p"] <= 1),
              ("repetition_penalty", isinstance(out["repetition_penalty"], (int, float)) and out["repetition_penalty"] > 0)]
    bad = [f"{k}={out[k]!r}" for k, ok in checks if not ok]
    if bad:
        raise CheckpointError(f"{where}: {', '.join(bad)} is out of range")
    return {**out, "eos_ids": [int(i) for i in eos]}


def emotion_entry(folder: EmotionFolder, graph: str, source: str) -> EmotionText:
    """The manifest's emotion_text for `folder` (the tokenizer is copied to BUNDLE_TOKENIZER)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder.tokenizer))
    think_end = tokenizer.token_to_id(THINK_END)
    if think_end is None:
        raise CheckpointError(f"{folder.tokenizer}: has no {THINK_END} token (upstream's answer follows it)")
    prefix, suffix = prompt_parts(folder.tokenizer_config, folder.root / TOKENIZER_CONFIG_FILE)
    gen = generation_settings(folder.generation, folder.raw_config, folder.root / GENERATION_FILE)
    c = folder.config
    too_big = [i for i in [think_end, *gen["eos_ids"]] if i >= c.vocab_size]
    if too_big:
        raise CheckpointError(f"{folder.root}: token ids {too_big} are outside the model's vocab_size {c.vocab_size}")
    return EmotionText(
        graph=graph, tokenizer=BUNDLE_TOKENIZER, source=source, prompt_prefix=prefix, prompt_suffix=suffix,
        think_end_id=think_end, eos_ids=gen["eos_ids"], do_sample=gen["do_sample"],
        temperature=float(gen["temperature"]), top_k=int(gen["top_k"]), top_p=float(gen["top_p"]),
        repetition_penalty=float(gen["repetition_penalty"]),
        clean_up_tokenization_spaces=bool(folder.tokenizer_config.get("clean_up_tokenization_spaces", False)),
        vocab_size=c.vocab_size, layers=c.num_hidden_layers, kv_heads=c.num_key_value_heads, head_dim=c.head_dim,
        max_positions=c.max_position_embeddings, config=folder.raw_config, generation_config=folder.generation,
    )
