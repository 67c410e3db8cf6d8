"""`manifest.json`: what a bundle holds, read strictly.

The exporter writes it, the runtime refuses what it does not understand: an unknown major
`format_version`, unknown keys, a missing or truncated file. Graph I/O names live here (and in the
exporter's graph specs), so the runtime never guesses them from a graph.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BundleError

FORMAT_VERSION = "1.1"  # 1.1: target, per-graph precision gates
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GPTDims:
    """The GPT's sizes and special tokens (config.yaml `gpt:`)."""

    model_dim: int
    heads: int
    layers: int
    head_dim: int
    semantic_dim: int
    condition_num_latent: int
    number_text_tokens: int
    number_mel_codes: int
    start_mel_token: int
    stop_mel_token: int
    start_text_token: int
    stop_text_token: int
    max_mel_tokens: int
    max_text_tokens: int


@dataclass(frozen=True)
class AcousticDims:
    """Sizes of the acoustic half: prompt encoders, s2mel and the vocoder."""

    sample_rate: int  # output audio (BigVGAN), 22050 officially
    hop_length: int  # audio samples per mel frame (256)
    n_mels: int  # mel bands (80)
    semantic_dim: int  # w2v-BERT / codec feature width (1024)
    content_dim: int  # length regulator output width (512)
    style_dim: int  # CAMPPlus style width (192)
    codebook_size: int  # semantic codes 0..codebook_size-1 (8192)
    dit_min_frames: int  # shortest prompt + target the DiT accepts (reflect padding)


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX graph: its file, I/O names in graph order, precision and target device.

    `parity` is the fp32 export's check against torch; `gate` is how a lower precision earned its place:
    the precision asked for, the one shipped and every attempt's gate results with their thresholds
    (empty for an fp32 graph nobody asked to lower)."""

    file: str
    inputs: list[str]
    outputs: list[str]
    precision: str = "fp32"  # fp32, fp16, int8 or int4
    device: str = "any"  # the device this precision is meant for: any, cpu or cuda
    parity: dict = field(default_factory=dict)  # the export-time check: atol, max_abs_diff, cases
    gate: dict = field(default_factory=dict)  # requested, chosen, attempts [{precision, passed, results, size}]


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format_version: str
    gpt: GPTDims
    acoustic: AcousticDims
    emo_num: list[int]  # rows per emotion group of the emotion / speaker matrices
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]  # every file of the bundle but the manifest, by relative path
    tables: dict[str, str]  # role -> file: gpt embedding tables, emotion matrices, tokenizer, mel filterbank
    target: str = "any"  # what the bundle was exported for: any (all fp32), cpu or cuda
    exporter: dict[str, Any] = field(default_factory=dict)  # versions of the tools that wrote it
    config: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.yaml, for reference

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict, where: str = MANIFEST) -> "Manifest":
        _check_keys(d, Manifest, where)
        _check_version(str(d["format_version"]), where)
        return Manifest(
            format_version=str(d["format_version"]),
            gpt=_build(GPTDims, d["gpt"], f"{where}: gpt"),
            acoustic=_build(AcousticDims, d["acoustic"], f"{where}: acoustic"),
            emo_num=[int(n) for n in d["emo_num"]],
            graphs={k: _build(GraphEntry, v, f"{where}: graphs.{k}") for k, v in d["graphs"].items()},
            files={k: _build(FileEntry, v, f"{where}: files.{k}") for k, v in d["files"].items()},
            tables={str(k): str(v) for k, v in d["tables"].items()},
            target=str(d.get("target", "any")),
            exporter=dict(d.get("exporter", {})),
            config=dict(d.get("config", {})),
        )


def _check_keys(d: Any, cls: type, where: str) -> None:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: expected an object", "re-export the bundle")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = set(d) - names, required - set(d)
    if unknown or missing:
        raise BundleError(
            f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}",
            "the bundle was written by another version of indextts2-onnx; re-export it with this one",
        )


def _build(cls: type, d: Any, where: str):
    _check_keys(d, cls, where)
    return cls(**d)


def _check_version(version: str, where: str) -> None:
    major = version.split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise BundleError(
            f"{where}: format_version {version} is not supported (this runtime reads {FORMAT_VERSION})",
            "re-export the bundle with this version of indextts2-onnx, or install the version that wrote it",
        )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle: Path) -> Manifest:
    """Read and check a bundle's manifest: format version, and every listed file present at its size."""
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle folder", "pass the folder `indextts2-onnx export` wrote")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BundleError(f"{path}: missing", "this is not a bundle; export one with `indextts2-onnx export`") from e
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: unreadable ({e})", "re-export the bundle") from e
    manifest = Manifest.from_dict(d, str(path))
    for rel, entry in manifest.files.items():
        f = bundle / rel
        if not f.is_file():
            raise BundleError(f"{bundle}: file {rel} is missing", "copy the whole bundle folder, or re-export it")
        if f.stat().st_size != entry.size:
            raise BundleError(
                f"{bundle}: file {rel} has {f.stat().st_size} bytes, the manifest says {entry.size} (truncated?)",
                "copy the whole bundle folder again, or re-export it",
            )
    return manifest


def verify_checksums(bundle: Path, manifest: Manifest) -> list[str]:
    """Names of the files whose sha256 differs from the manifest (empty when all match)."""
    return [rel for rel, e in manifest.files.items() if sha256(bundle / rel) != e.sha256]
