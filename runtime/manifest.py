"""`manifest.json`: what a bundle holds, read strictly.

The exporter writes it, the runtime refuses what it does not understand: an unknown major
`format_version`, unknown keys, a field of the wrong type, a path that leaves the bundle, a file the
runtime opens that is not listed, a missing or truncated file. Graph I/O names live here (and in the
exporter's graph specs), so the runtime never guesses them from a graph.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union, get_args, get_origin, get_type_hints

from .errors import BundleError
from .kv_cache import KV_CACHE_RULE, ROLES_RULE, is_kv_cache, is_roles

FORMAT_VERSION = "1.5"  # 1.1: target, per-graph precision gates; 1.2: graphs' kv_cache name patterns;
# 1.3: graphs' I/O roles, the decoder's cache layout (concat or shared); 1.4: family (IndexTTS-2 or 2.5;
# absent in older manifests, which are all 2.0); 1.5: emotion_text (the emotion-from-text model, or null)
MANIFEST = "manifest.json"
TABLE_ROLES = ("gpt_tables", "emotion_matrix", "speaker_matrix", "tokenizer", "mel_filterbank")

_REEXPORT = "re-export the bundle with this version of indextts2-onnx"
REFETCH = "re-export the bundle or download it again"


def _rule(check: Callable[[Any], bool], what: str) -> dict:
    """Field metadata: a check on the value (after its type check) and what it must be, for the message."""
    return {"check": check, "what": what}


_NON_NEGATIVE = _rule(lambda v: v >= 0, "a non-negative integer")
_POSITIVE = _rule(lambda v: v > 0, "a positive integer")
_DEVICE = _rule(lambda v: v in ("any", "cpu", "cuda"), 'one of "any", "cpu", "cuda"')
FAMILIES = ("2.0", "2.5")  # IndexTTS-2, IndexTTS-2.5


@dataclass(frozen=True)
class GPTDims:
    """The GPT's sizes and special tokens (config.yaml `gpt:`)."""

    model_dim: int = field(metadata=_POSITIVE)
    heads: int = field(metadata=_POSITIVE)
    layers: int = field(metadata=_POSITIVE)
    head_dim: int = field(metadata=_POSITIVE)
    semantic_dim: int = field(metadata=_POSITIVE)
    condition_num_latent: int = field(metadata=_POSITIVE)
    number_text_tokens: int = field(metadata=_POSITIVE)
    number_mel_codes: int = field(metadata=_POSITIVE)
    start_mel_token: int = field(metadata=_NON_NEGATIVE)
    stop_mel_token: int = field(metadata=_NON_NEGATIVE)
    start_text_token: int = field(metadata=_NON_NEGATIVE)
    stop_text_token: int = field(metadata=_NON_NEGATIVE)
    max_mel_tokens: int = field(metadata=_POSITIVE)
    max_text_tokens: int = field(metadata=_POSITIVE)


@dataclass(frozen=True)
class AcousticDims:
    """Sizes of the acoustic half: prompt encoders, s2mel and the vocoder."""

    sample_rate: int = field(metadata=_POSITIVE)  # output audio (BigVGAN), 22050 officially
    hop_length: int = field(metadata=_POSITIVE)  # audio samples per mel frame (256)
    n_mels: int = field(metadata=_POSITIVE)  # mel bands (80)
    semantic_dim: int = field(metadata=_POSITIVE)  # w2v-BERT / codec feature width (1024)
    content_dim: int = field(metadata=_POSITIVE)  # length regulator output width (512)
    style_dim: int = field(metadata=_POSITIVE)  # CAMPPlus style width (192)
    codebook_size: int = field(metadata=_POSITIVE)  # semantic codes 0..codebook_size-1 (8192)
    dit_min_frames: int = field(metadata=_NON_NEGATIVE)  # shortest prompt + target the DiT accepts (reflect padding)


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX graph: its file, I/O names in graph order, precision and target device.

    `parity` is the fp32 export's check against torch; `gate` is how a lower precision earned its place:
    the precision asked for, the one shipped and every attempt's gate results with their thresholds
    (empty for an fp32 graph nobody asked to lower). `kv_cache` declares which inputs and outputs hold a
    KV cache, by name pattern (runtime.kv_cache); empty for graphs without one, and for gpt_decoder in
    bundles written before the field existed (format 1.1), whose names are kv_cache.LEGACY_KV_CACHE's;
    its "layout" says whether presents extend the pasts or share their buffers. `roles` names the other
    inputs and outputs the runtime addresses (kv_cache.LAYOUT_ROLES; legacy names before format 1.3)."""

    file: str
    inputs: list[str]
    outputs: list[str]
    precision: str = field(default="fp32", metadata=_rule(  # fp32, fp16, int8 or int4
        lambda v: v in ("fp32", "fp16", "int8", "int4"), 'one of "fp32", "fp16", "int8", "int4"'))
    device: str = field(default="any", metadata=_DEVICE)  # the device this precision is meant for
    parity: dict = field(default_factory=dict)  # the export-time check: atol, max_abs_diff, cases
    gate: dict = field(default_factory=dict)  # requested, chosen, attempts [{precision, passed, results, size}]
    kv_cache: dict[str, str] = field(default_factory=dict, metadata=_rule(is_kv_cache, KV_CACHE_RULE))
    roles: dict[str, str] = field(default_factory=dict, metadata=_rule(is_roles, ROLES_RULE))  # role -> I/O name


@dataclass(frozen=True)
class FileEntry:
    size: int = field(metadata=_NON_NEGATIVE)
    sha256: str = field(metadata=_rule(lambda v: re.fullmatch("[0-9a-f]{64}", v) is not None,
                                       "64 lowercase hex digits"))


@dataclass(frozen=True)
class EmotionText:
    """The emotion-from-text model (upstream's QwenEmotion, qwen-emotion.md): its decoder graph, its
    tokenizer and everything its folder's JSON files decide, read once at export so that the runtime
    needs neither transformers nor a template engine.

    The prompt is `prompt_prefix + text + prompt_suffix`: the folder's chat template rendered with upstream's
    system prompt, the text as the user turn, the generation prompt and thinking disabled, split where
    the text goes. Decoding follows generation_config.json (HF defaults where it is silent) and stops at
    any of `eos_ids`; the answer is the text after the last `think_end_id`."""

    graph: str  # its decoder's key in `graphs`
    tokenizer: str  # its tokenizer.json, bundle-relative
    source: str  # the checkpoint folder it came from (config.yaml's qwen_emo_path), for messages
    prompt_prefix: str
    prompt_suffix: str
    think_end_id: int = field(metadata=_NON_NEGATIVE)  # `</think>`, read from the tokenizer
    eos_ids: list[int] = field(metadata=_rule(lambda v: len(v) > 0 and all(i >= 0 for i in v),
                                              "a non-empty list of token ids"))
    do_sample: bool
    temperature: float = field(metadata=_rule(lambda v: v > 0, "a positive number"))
    top_k: int = field(metadata=_NON_NEGATIVE)
    top_p: float = field(metadata=_rule(lambda v: 0 < v <= 1, "a number in (0, 1]"))
    repetition_penalty: float = field(metadata=_rule(lambda v: v > 0, "a positive number"))
    clean_up_tokenization_spaces: bool  # tokenizer_config.json's: decoded text cleaned as transformers does
    vocab_size: int = field(metadata=_POSITIVE)
    layers: int = field(metadata=_POSITIVE)
    kv_heads: int = field(metadata=_POSITIVE)
    head_dim: int = field(metadata=_POSITIVE)
    max_positions: int = field(metadata=_POSITIVE)  # prompt + answer tokens the rotary positions cover
    config: dict[str, Any] = field(default_factory=dict)  # the folder's config.json, for reference
    generation_config: dict[str, Any] = field(default_factory=dict)  # its generation_config.json, for reference


@dataclass(frozen=True)
class Manifest:
    format_version: str = field(metadata=_rule(lambda v: re.fullmatch(r"\d+\.\d+", v) is not None,
                                               'a version like "1.1"'))
    gpt: GPTDims
    acoustic: AcousticDims
    emo_num: list[int] = field(metadata=_rule(  # rows per emotion group of the emotion / speaker matrices
        lambda v: len(v) > 0 and all(n > 0 for n in v), "a non-empty list of positive integers"))
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]  # every file of the bundle but the manifest, by relative path
    tables: dict[str, str]  # role -> file: gpt embedding tables, emotion matrices, tokenizer, mel filterbank
    target: str = field(default="any", metadata=_DEVICE)  # what the bundle was exported for: any (all fp32), cpu or cuda
    family: str = field(default="2.0", metadata=_rule(  # the model family the bundle was exported from
        lambda v: v in FAMILIES, 'one of "2.0", "2.5"'))
    exporter: dict[str, Any] = field(default_factory=dict)  # versions of the tools that wrote it
    config: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.yaml, for reference
    # the emotion-from-text model; None: the checkpoint had none (or the bundle predates format 1.5)
    emotion_text: Optional[EmotionText] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict, where: str = MANIFEST) -> "Manifest":
        """A manifest from its JSON object; any key, type or value it does not accept is a BundleError."""
        version = d.get("format_version") if isinstance(d, dict) else None
        if isinstance(version, str):  # an unknown major version is refused before its fields are judged
            _check_version(version, where)
        return _build(Manifest, d, where, "")


# --- field checks, driven by the dataclasses' type hints --------------------------------------------------


def _json(value: Any) -> str:
    """A value as it appears in the JSON file, cut to a readable length."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_error(where: str, name: str, what: str, value: Any) -> BundleError:
    return BundleError(f"{where}: {name or 'the manifest'} must be {what}, got {_json(value)}", _REEXPORT)


def _check_keys(d: Any, cls: type, where: str, name: str) -> None:
    if not isinstance(d, dict):
        raise _type_error(where, name, "an object", d)
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = set(d) - names, required - set(d)
    if unknown or missing:
        raise BundleError(
            f"{where}: {name + ': ' if name else ''}unknown keys {sorted(unknown)}, missing keys {sorted(missing)}",
            "the bundle was written by another version of indextts2-onnx; re-export it with this one",
        )


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _build(cls: type, d: Any, where: str, name: str):
    """An instance of the dataclass `cls` from JSON object `d`, every field checked against its type hint
    and its metadata rule. `name` is the field path for messages ("gpt", 'graphs["dit"]')."""
    _check_keys(d, cls, where, name)
    hints = _hints(cls)
    values = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        path = f"{name}.{f.name}" if name else f.name
        values[f.name] = _value(d[f.name], hints[f.name], where, path)
        rule = f.metadata.get("check")
        if rule is not None and not rule(values[f.name]):
            raise _type_error(where, path, f.metadata["what"], d[f.name])
    return cls(**values)


def _value(value: Any, hint: Any, where: str, name: str) -> Any:
    """`value` checked against the type hint `hint` (int, float, bool, str, dataclass, list[T], dict[str, T],
    Optional[T], Any)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin is Union and type(None) in args:  # Optional[T]: null or a T
        (inner,) = [a for a in args if a is not type(None)]
        return None if value is None else _value(value, inner, where, name)
    if is_dataclass(hint):
        return _build(hint, value, where, name)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, name, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _type_error(where, name, "a finite number", value)
        return float(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(where, name, "true or false", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(where, name, "a string", value)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(where, name, "a list", value)
        return [_value(v, args[0], where, f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, name, "an object", value)
        item = args[1] if args else Any
        return {k: _value(v, item, where, f"{name}[{json.dumps(k)}]") for k, v in value.items()}
    raise TypeError(f"manifest field {name}: unsupported type hint {hint!r}")  # a bug here, not in a bundle


def _check_version(version: str, where: str) -> None:
    major = version.split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise BundleError(
            f"{where}: format_version {version} is not supported (this runtime reads {FORMAT_VERSION})",
            "re-export the bundle with this version of indextts2-onnx, or install the version that wrote it",
        )


# --- paths ------------------------------------------------------------------------------------------------


def check_relative(rel: str, where: str, name: str) -> None:
    """A bundle-relative path as the manifest may hold it: POSIX, relative, no `..`, `.` or empty parts,
    no backslash or drive letter (so it names the same file on every OS)."""
    parts = rel.split("/")
    bad = ("it is empty" if not rel else
           "it is absolute" if rel.startswith("/") else
           "it holds a backslash or a drive letter" if "\\" in rel or ":" in rel else
           "it holds a '..' part" if ".." in parts else
           "it holds an empty or '.' part" if any(p in ("", ".") for p in parts) else "")
    if bad:
        raise BundleError(f"{where}: {name} {json.dumps(rel)} is not a path inside the bundle ({bad})", _REEXPORT)


def bundle_path(bundle: Path, rel: str, where: str, name: str) -> Path:
    """`bundle / rel` once `rel` is a checked relative path whose real location (symlinks resolved) stays
    inside the bundle's real folder."""
    check_relative(rel, where, name)
    path = bundle / rel
    real, root = path.resolve(), bundle.resolve()
    if real == root or not real.is_relative_to(root):
        raise BundleError(f"{where}: {name} {json.dumps(rel)} leads outside the bundle (to {real})",
                          "bundle files must be real files inside the bundle folder; copy them in and re-export")
    return path


def _check_listed(manifest: Manifest, where: str) -> None:
    """Every graph and table file the runtime opens is listed in `files` (so its size and sha256 are
    checked); every table role the runtime needs is there."""
    missing_roles = [r for r in TABLE_ROLES if r not in manifest.tables]
    if missing_roles:
        raise BundleError(f"{where}: tables has no {', '.join(missing_roles)}", _REEXPORT)
    opened = [(f'graphs["{k}"].file', g.file) for k, g in manifest.graphs.items()]
    opened += [(f'tables["{k}"]', rel) for k, rel in manifest.tables.items()]
    emotion = manifest.emotion_text
    if emotion is not None:
        if emotion.graph not in manifest.graphs:
            raise BundleError(f"{where}: emotion_text.graph {json.dumps(emotion.graph)} is not in graphs", _REEXPORT)
        opened.append(("emotion_text.tokenizer", emotion.tokenizer))
    for name, rel in opened:
        check_relative(rel, where, name)
        if rel not in manifest.files:
            raise BundleError(f"{where}: {name} {json.dumps(rel)} is not listed in files (no size or sha256 to check)",
                              _REEXPORT)


# --- loading and checksums --------------------------------------------------------------------------------


def sha256(path: Path, stop: threading.Event | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (hashlib releases the GIL on them); "" once `stop` is set."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if stop is not None and stop.is_set():
                return ""
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle: Path) -> Manifest:
    """Read and check a bundle's manifest: format version, field types, paths that stay inside the bundle,
    every graph and table listed, and every listed file present at its size."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle folder", "pass the folder `indextts2-onnx export` wrote")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BundleError(f"{path}: missing", "this is not a bundle; export one with `indextts2-onnx export`") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: unreadable ({e})", "re-export the bundle") from e
    manifest = Manifest.from_dict(d, str(path))
    for rel, entry in manifest.files.items():
        f = bundle_path(bundle, rel, str(path), "files key")
        if not f.is_file():
            raise BundleError(f"{bundle}: file {rel} is missing", "copy the whole bundle folder, or re-export it")
        if f.stat().st_size != entry.size:
            raise BundleError(
                f"{bundle}: file {rel} has {f.stat().st_size} bytes, the manifest says {entry.size} (truncated?)",
                "copy the whole bundle folder again, or re-export it",
            )
    _check_listed(manifest, str(path))
    return manifest


def hash_workers(n_files: int) -> int:
    """Threads for hashing `n_files` files: one per core, at most 8 (hashlib releases the GIL)."""
    return max(1, min(n_files, os.cpu_count() or 1, 8))


def verify_checksums(bundle: Path, manifest: Manifest, names: list[str] | None = None,
                     stop: threading.Event | None = None, workers: int = 1) -> list[str]:
    """Names of the listed files (all, or `names`) whose sha256 differs from the manifest; empty when all
    match. Paths are checked to stay inside the bundle before a byte is read. With `workers` > 1 the files
    are hashed in parallel, largest first (a bundle is a few large weight files: one per thread)."""
    where = str(Path(bundle) / MANIFEST)
    names = list(manifest.files if names is None else names)
    paths = {rel: bundle_path(Path(bundle), rel, where, "files key") for rel in names}
    order = sorted(names, key=lambda rel: manifest.files[rel].size, reverse=True)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="indextts2-sha256") as pool:
        digests = dict(zip(order, pool.map(lambda rel: sha256(paths[rel], stop), order)))
    if stop is not None and stop.is_set():
        return []
    return [rel for rel in names if digests[rel] != manifest.files[rel].sha256]


def checksum_error(bundle: Path, bad: list[str]) -> BundleError:
    """The error for files whose sha256 differs from the manifest."""
    names = ", ".join(str(Path(bundle) / rel) for rel in bad)
    return BundleError(f"{names}: sha256 differs from the manifest (corrupted or modified)", REFETCH)
