"""Bundle integrity at load: what a graph reads besides itself, sha256 in the background, tables vs dims.

`load_manifest` already refuses bad types, paths that leave the bundle and graphs or tables missing from
`files`. This module covers what needs the files themselves:

- external data: ONNX Runtime reads a graph's weights from the files its initializers name (`location`),
  relative to the graph. Those names are read here from the graph's protobuf, before ONNX Runtime opens it,
  and each must be a listed file inside the bundle, so nothing unlisted (hence unhashed) is ever read;
- checksums: `ChecksumJob` hashes every listed file in a background thread while the sessions are
  created, and raises a mismatch when the load is done (or fails), never later;
- tables: `BundleTables.load` reads the tables with errors naming the file, and checks their shapes
  against the manifest's dims (a table that disagrees would otherwise fail mid-synthesis, or index wrong).
"""

from __future__ import annotations

import json
import posixpath
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import MEL_NFFT
from .conditioning import EmotionMatrices
from .errors import BundleError
from .gpt import GptTables
from .kv_cache import LEGACY_KV_CACHE, decoder_io
from .manifest import (MANIFEST, REFETCH, Manifest, bundle_path, check_relative, checksum_error,
                       hash_workers, verify_checksums)
from .sessions import Graph
from .text import Tokenizer

# --- external data: a minimal reader of the ONNX protobuf -------------------------------------------------
#
# Only the messages that can hold a tensor are entered, by the field numbers of onnx.proto:
# ModelProto.graph 7, .training_info 20, .functions 25; GraphProto.node 1, .initializer 5,
# .sparse_initializer 15; NodeProto.attribute 5; AttributeProto.t 5, .g 6, .tensors 10, .graphs 11,
# .sparse_tensor 22, .sparse_tensors 23; FunctionProto.node 7, .attribute_proto 11;
# TrainingInfoProto.initialization 1, .algorithm 2; SparseTensorProto.values 1, .indices 2;
# TensorProto.external_data 13 (StringStringEntryProto: key 1, value 2). Every other field is skipped by
# its length, so a graph of a few MB is read in milliseconds and the runtime needs no `onnx` package.
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}


class _Malformed(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("a number runs past its message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _length_fields(buf: bytes, start: int, end: int):
    """(field number, start, end) of each length-delimited field of the message in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _Malformed("a field runs past its message")
            yield number, pos, pos + size
            pos += size
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past its message")


def external_data_locations(buf: bytes) -> set[str]:
    """Every `location` an ONNX model's tensors (initializers, constants, subgraphs, functions) name for
    their external data. Raises ValueError when `buf` is not a well-formed protobuf."""
    locations: set[str] = set()
    stack = [("model", 0, len(buf))]
    while stack:
        kind, start, end = stack.pop()
        if kind == "entry":
            entry = {number: buf[s:e] for number, s, e in _length_fields(buf, start, end)}
            if entry.get(1) == b"location":
                locations.add(entry.get(2, b"").decode("utf-8", errors="replace"))
            continue
        children = _CHILDREN[kind]
        stack += [(children[n], s, e) for n, s, e in _length_fields(buf, start, end) if n in children]
    return locations


def graph_data_files(bundle: Path, manifest: Manifest, name: str) -> list[str]:
    """The listed files graph `name` reads its external data from. Each location in the graph must be a
    relative path to a file listed in the manifest (ONNX Runtime resolves it next to the graph file)."""
    entry = manifest.graphs[name]
    path = bundle_path(bundle, entry.file, str(bundle / MANIFEST), f'graphs["{name}"].file')
    try:
        locations = external_data_locations(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not a readable ONNX graph ({e})", REFETCH) from e
    files = []
    for loc in sorted(locations):
        check_relative(loc, str(path), "external data location")
        rel = posixpath.join(posixpath.dirname(entry.file), loc)
        if rel not in manifest.files:
            raise BundleError(f"{path}: its weights are read from {loc!r}, which the manifest does not list",
                              REFETCH)
        files.append(rel)
    return files


def check_bundle_files(bundle: Path, manifest: Manifest) -> list[str]:
    """What `info --check` and `verify` vouch for: every graph reads only listed files (BundleError if not),
    and the names of the listed files whose sha256 differs from the manifest (empty when all match)."""
    for name in manifest.graphs:
        graph_data_files(bundle, manifest, name)
    return verify_checksums(bundle, manifest)


# --- checksums, in the background -------------------------------------------------------------------------


class ChecksumJob:
    """sha256 of listed files in background threads (one per core, largest file first), for the time a
    `with` block runs.

        with ChecksumJob(bundle, manifest, names):
            ...  # create sessions, load tables
        # leaving the block waits for the hashes and raises BundleError naming any file that differs

    A failure inside the block still waits for the hashes and reports a mismatch first (a corrupt file
    is the likelier cause of e.g. an unloadable graph); an interrupt (KeyboardInterrupt) stops hashing at
    the next 1 MiB chunk. The thread never outlives the block."""

    def __init__(self, bundle: Path, manifest: Manifest, names: list[str]):
        self.bundle = bundle
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indextts2-sha256")
        self._future = self._pool.submit(verify_checksums, bundle, manifest, list(names), self._stop,
                                         hash_workers(len(names)))

    def __enter__(self) -> "ChecksumJob":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and not isinstance(exc, Exception):
            self._stop.set()
        try:
            bad = self._future.result()
        except OSError as e:
            raise BundleError(f"{self.bundle}: a file could not be read for its checksum ({e})",
                              "copy the whole bundle folder again, or re-export it") from (exc or e)
        except BundleError:
            if exc is not None:
                return False  # the same path problem surfaces in the block's own error
            raise
        finally:
            self._pool.shutdown(wait=True)
        if bad and not self._stop.is_set():
            raise checksum_error(self.bundle, bad) from exc
        return False


# --- tables, checked against the manifest's dims ----------------------------------------------------------

MISMATCH = "the bundle's files do not belong together; re-export it"


def _read(bundle: Path, manifest: Manifest, role: str, reader):
    """`reader(path)` on the table file of `role`, with any failure to read it a BundleError naming it."""
    path = bundle_path(bundle, manifest.tables[role], str(bundle / MANIFEST), f'tables["{role}"]')
    try:
        return path, reader(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # InputError is a ValueError
        raise BundleError(f"{path}: cannot read the {role} table ({type(e).__name__}: {e})", REFETCH) from e


def _shape_error(path: Path, what: str, got: tuple, want: tuple, why: str) -> BundleError:
    return BundleError(f"{path}: {what} has shape {list(got)}, the manifest's dims need {list(want)} ({why})",
                       MISMATCH)


def check_gpt_tables(path: Path, tables: GptTables, manifest: Manifest) -> None:
    """Each embedding table (rows, model_dim) with the rows the GPT dims imply (export `_write_tables`)."""
    d, style = manifest.gpt, manifest.acoustic.style_dim
    want = {
        "text_embedding": ((d.number_text_tokens + 1, d.model_dim), "number_text_tokens + 1, gpt.model_dim"),
        "text_pos_embedding": ((d.max_text_tokens + 2, d.model_dim), "max_text_tokens + 2, gpt.model_dim"),
        "mel_embedding": ((d.number_mel_codes, d.model_dim), "number_mel_codes, gpt.model_dim"),
        "mel_pos_embedding": ((d.max_mel_tokens + 3, d.model_dim), "max_mel_tokens + 3, gpt.model_dim"),
    }
    if manifest.family == "2.5":  # the language rows are checked against the tokenizer (check_vocab_25)
        want["speaker_projection"] = ((style, d.model_dim), "acoustic.style_dim, gpt.model_dim")
        want["speaker_projection_bias"] = ((d.model_dim,), "gpt.model_dim")
    else:
        want["speed_embedding"] = ((2, d.model_dim), "2 speeds, gpt.model_dim")
    for name, (shape, why) in want.items():
        got = getattr(tables, name).shape
        if got != shape:
            raise _shape_error(path, name, got, shape, why)


def check_matrices(paths: tuple[Path, Path], emotion: np.ndarray, speaker: np.ndarray, manifest: Manifest) -> None:
    """Emotion matrix (sum(emo_num), gpt.model_dim), speaker matrix (sum(emo_num), acoustic.style_dim)."""
    rows = sum(manifest.emo_num)
    for path, m, width, why in ((paths[0], emotion, manifest.gpt.model_dim, "sum(emo_num), gpt.model_dim"),
                                (paths[1], speaker, manifest.acoustic.style_dim, "sum(emo_num), acoustic.style_dim")):
        if m.shape != (rows, width):
            raise _shape_error(path, "the matrix", m.shape, (rows, width), why)


def check_filterbank(path: Path, bank: np.ndarray, manifest: Manifest) -> None:
    """The log-mel filter bank (n_mels, MEL_NFFT // 2 + 1) that runtime.audio.log_mel projects with."""
    want = (manifest.acoustic.n_mels, MEL_NFFT // 2 + 1)
    if bank.shape != want:
        raise _shape_error(path, "the filter bank", bank.shape, want, f"acoustic.n_mels, {MEL_NFFT} // 2 + 1")


def check_vocab(path: Path, tokenizer: Tokenizer, manifest: Manifest) -> None:
    """Every id the tokenizer can produce must index text_embedding (number_text_tokens + 1 rows)."""
    rows = manifest.gpt.number_text_tokens + 1
    if tokenizer.vocab_size > rows:
        raise BundleError(f"{path}: {tokenizer.vocab_size} pieces, but the GPT has {rows} text embeddings "
                          "(gpt.number_text_tokens + 1)", MISMATCH)


def check_vocab_25(path: Path, tokenizer, tables_path: Path, tables: GptTables, manifest: Manifest) -> None:
    """2.5: the tiktoken file's ids (ranks + specials) are exactly gpt.number_text_tokens, as upstream's
    config ties them, and every language id has a row of lang_embedding (d wide)."""
    d = manifest.gpt
    if tokenizer.n_vocab != d.number_text_tokens:
        raise BundleError(f"{path}: {tokenizer.n_vocab} token ids ({tokenizer.n_ranks} ranks + specials), but the "
                          f"GPT has gpt.number_text_tokens = {d.number_text_tokens}", MISMATCH)
    from .multilingual import LANGUAGES_25

    rows = max(tokenizer.language_id(lang) for lang in LANGUAGES_25) + 1
    got = tables.lang_embedding.shape
    if got[0] < rows or got[1:] != (d.model_dim,):
        raise BundleError(f"{tables_path}: lang_embedding has shape {list(got)}, the tokenizer's language ids "
                          f"need at least {rows} rows of gpt.model_dim {d.model_dim}", MISMATCH)


def check_decoder(bundle: Path, graph: Graph, manifest: Manifest) -> None:
    """gpt_decoder's inputs and outputs by role (kv_cache.decoder_io): the embeddings input
    (batch, seq, model_dim) and a past key and value per layer (batch, heads, past_seq, head_dim), no input
    without a role, and logits, hidden states and every present among the outputs. Only the fixed axes of
    the declared shapes are compared."""
    d, entry = manifest.gpt, manifest.graphs[graph.name]
    path, io = bundle / entry.file, decoder_io(entry, d)
    key = f'graphs["{graph.name}"].kv_cache'
    declared = (f"{key} {json.dumps(entry.kv_cache)}" if entry.kv_cache else
                f"no {key}: the legacy names {json.dumps(LEGACY_KV_CACHE)}")
    names = io.past + io.present
    if len(set(names)) != len(names):
        raise BundleError(f"{bundle / MANIFEST}: {declared} gives two cache tensors the same name for gpt.layers "
                          f"{d.layers}", MISMATCH)
    unnamed = [role for role, name in io.names().items() if name is None]
    if unnamed:
        raise BundleError(f'{bundle / MANIFEST}: graphs["{graph.name}"].roles names no {unnamed[0]} input, which '
                          f'its {io.layout} cache layout needs', MISMATCH)
    want = {io.embeds: ("the embeddings", (None, None, d.model_dim))}
    if io.layout == "shared":  # mel codes embedded in the graph and GroupQueryAttention's lengths
        want |= {io.codes: ("the mel codes", (None, None)), io.positions: ("the mel positions", (None, None)),
                 io.seqlens_k: ("the lengths - 1", (None,)), io.total_length: ("the longest length", ())}
    want |= {name: (f"the past {io.role(i)}", (None, d.heads, None, d.head_dim)) for i, name in enumerate(io.past)}
    shapes = {arg.name: arg.shape for arg in graph.session.get_inputs()}
    for name, (role, shape) in want.items():
        if name not in shapes:
            raise BundleError(f"{path}: no input {name} ({role}; gpt.layers {d.layers}, {declared})", MISMATCH)
        got = shapes[name]
        fixed = [(g, w) for g, w in zip(got, shape) if isinstance(g, int) and w is not None]
        if len(got) != len(shape) or any(g != w for g, w in fixed):
            raise BundleError(f"{path}: input {name} has shape {got}, the manifest's gpt dims need "
                              f"{['*' if w is None else w for w in shape]}", MISMATCH)
    extra = [name for name in shapes if name not in want]
    if extra:
        raise BundleError(f"{path}: input {extra[0]} has no role: it is neither an input of the {io.layout} "
                          f"layout nor a past of the gpt.layers {d.layers} the manifest declares ({declared})",
                          MISMATCH)
    outputs = {io.logits: "the logits", io.hidden: "the hidden states"}
    outputs |= {name: f"the present {io.role(i)}" for i, name in enumerate(io.present)}
    missing = [name for name in outputs if name not in graph.outputs]
    if missing:
        raise BundleError(f"{path}: no output {missing[0]} ({outputs[missing[0]]}; gpt.layers {d.layers}, "
                          f"{declared})", MISMATCH)


@dataclass(frozen=True)
class BundleTables:
    """Every table of a bundle, read and checked against the manifest's dims."""

    gpt: GptTables
    matrices: EmotionMatrices
    tokenizer: Tokenizer  # 2.0's SentencePiece front end; a MultilingualTokenizer (tiktoken) for 2.5
    mel_filterbank: np.ndarray

    @staticmethod
    def load(bundle: Path, manifest: Manifest, max_text_chars: int) -> "BundleTables":
        family = manifest.family
        gpt_path, gpt = _read(bundle, manifest, "gpt_tables", lambda p: GptTables.load(p, family))
        emo_path, emo = _read(bundle, manifest, "emotion_matrix", np.load)
        spk_path, spk = _read(bundle, manifest, "speaker_matrix", np.load)
        check_matrices((emo_path, spk_path), emo, spk, manifest)
        if family == "2.5":
            from .multilingual import MultilingualTokenizer  # tiktoken: imported only for 2.5 bundles

            tok_path, tokenizer = _read(bundle, manifest, "tokenizer",
                                        lambda p: MultilingualTokenizer.load(p, max_chars=max_text_chars,
                                                                           max_text_tokens=manifest.gpt.max_text_tokens))
            check_vocab_25(tok_path, tokenizer, gpt_path, gpt, manifest)
        else:
            tok_path, tokenizer = _read(bundle, manifest, "tokenizer",
                                        lambda p: Tokenizer.load(p, max_chars=max_text_chars))
            check_vocab(tok_path, tokenizer, manifest)
        check_gpt_tables(gpt_path, gpt, manifest)
        mel_path, bank = _read(bundle, manifest, "mel_filterbank", np.load)
        check_filterbank(mel_path, bank, manifest)
        return BundleTables(gpt, EmotionMatrices.split(emo, spk, manifest.emo_num), tokenizer, bank)
