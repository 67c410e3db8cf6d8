"""Shared fixtures: one tiny random-weight checkpoint and its exported bundle per test session.

Both are built by the project's own tools (`tools/make_checkpoint.py`, `export_bundle`), so every test
runs on the official file layout at toy widths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # official_keys.json: the loading contract (from the spec)


def make_checkpoint(out: Path, config: str = "tiny", seed: int = 0, model: str = "2.0") -> Path:
    """tools/make_checkpoint.py: a random-weight folder of `model` (2.0 or 2.5) at `config` size."""
    subprocess.run([sys.executable, str(REPO / "tools" / "make_checkpoint.py"), "--model", model, "--config", config,
                    "--out", str(out), "--seed", str(seed)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def export_tiny(checkpoint: Path, out: Path, **options) -> Path:
    """`export_bundle` of `checkpoint` into `out` (fp32; `options` as export_bundle's, e.g. decoder=)."""
    pytest.importorskip("torch")
    from indextts2_onnx.export.bundle import export_bundle
    from indextts2_onnx.export.checkpoint import CheckpointPaths

    export_bundle(CheckpointPaths.of(checkpoint), out, **options)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    return export_tiny(tiny_checkpoint, tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def tiny_concat_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same checkpoint exported with the first-generation (concat KV cache) decoder, the layout of
    every bundle before format 1.3: the runtime keeps running those."""
    return export_tiny(tiny_checkpoint, tmp_path_factory.mktemp("bundle") / "tiny_concat", decoder="concat")


@pytest.fixture(scope="session")
def tiny_gpt(tiny_checkpoint):
    """Our torch UnifiedVoice loaded strictly from the tiny gpt.pth."""
    pytest.importorskip("torch")
    from indextts2_onnx.export.checkpoint import CheckpointPaths, load_gpt
    from indextts2_onnx.export.config import load_config

    cfg = load_config(tiny_checkpoint / "config.yaml")
    return load_gpt(CheckpointPaths.of(tiny_checkpoint, cfg), cfg)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for a module (restored after): toy-sized ops gain nothing from threads,
    and on a busy 2-core runner they lose a lot."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- IndexTTS-2.5: the same, from configs/tiny25 ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny25_checkpoint(tmp_path_factory) -> Path:
    """A random-weight IndexTTS-2.5 folder in upstream's layout (codec.pth, the .tiktoken tokenizer, ...)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt25") / "tiny25", model="2.5")


@pytest.fixture(scope="session")
def tiny25_bundle(tiny25_checkpoint, tmp_path_factory) -> Path:
    """tiny25_checkpoint exported (fp32, shared decoder): an IndexTTS-2.5 bundle."""
    return export_tiny(tiny25_checkpoint, tmp_path_factory.mktemp("bundle25") / "tiny25")
