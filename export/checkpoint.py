"""Strict loading of the official checkpoint files into our modules.

Upstream loads `gpt.pth` with `strict=False` and only prints what did not match; we refuse instead: a
missing or mis-shaped tensor is an error naming the file, the key and the expected shape, and so is an
unexpected key unless it is one of the declared extras below (aliases a real file may carry, tensors
upstream stores but never uses at inference).

A folder is IndexTTS-2.5 when it holds `codec.pth` and the tiktoken tokenizer (`folder_family`); its files
are then found by their fixed names (config.FIXED_NAMES_25), each overridable like every 2.0 file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import IndexTTS2Config, load_config

CODEC_FILE = "codec.pth"  # IndexTTS-2.5's semantic codec: {"model": EnhancedCodec state dict}
# IndexTTS-2.5's tokenizer. runtime.multilingual.TIKTOKEN_FILE is the same name; repeated here so that the
# checkpoint loader does not import the text front end.
TIKTOKEN_FILE = "multilingual_zh_ja_yue_char_del.tiktoken"
# The emotion-from-text model's folder where config.yaml has no qwen_emo_path (upstream's value)
QWEN_EMO_FOLDER = "qwen0.6bemo4-merge"

# file -> patterns of keys that may be present and are ignored
KNOWN_EXTRAS: dict[str, tuple[str, ...]] = {
    # post_init_gpt2_config aliases: `inference_model.*` re-registers the body and heads, gpt.wte is
    # mel_embedding (architecture §2.1, §7.1)
    "gpt.pth": (r"inference_model\..*", r"gpt\.wte\.weight"),
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the official layout."""


def folder_family(root: str | Path, codec: str | Path | None = None, tokenizer: str | Path | None = None) -> str:
    """"2.5" when the checkpoint folder `root` holds codec.pth and the tiktoken tokenizer (or `codec` /
    `tokenizer` point at them), "2.0" when it holds neither; only one of them is a CheckpointError naming
    the other and its override flag."""
    root = Path(root)
    files = {"codec": Path(codec) if codec else root / CODEC_FILE,
             "tokenizer": Path(tokenizer) if tokenizer else root / TIKTOKEN_FILE}
    present = {name: path.is_file() for name, path in files.items()}
    if all(present.values()):
        return "2.5"
    if not any(present.values()):
        return "2.0"
    have, miss = ("codec", "tokenizer") if present["codec"] else ("tokenizer", "codec")
    raise CheckpointError(
        f"{root}: has {files[have].name} but no {files[miss].name} ({files[miss]}): an IndexTTS-2.5 checkpoint "
        f"holds both; add the missing file or pass --{miss} PATH"
    )


@dataclass(frozen=True)
class CheckpointPaths:
    """Where the files of a checkpoint folder are (each overridable)."""

    root: Path
    config: Path
    gpt: Path
    s2mel: Path
    bpe: Path
    w2v_stats: Path
    emo_matrix: Path
    spk_matrix: Path
    w2v_bert: Path
    semantic_codec: Path
    campplus: Path
    bigvgan: Path
    codec: Path  # IndexTTS-2.5: codec.pth (replaces semantic_codec)
    tokenizer: Path  # IndexTTS-2.5: the tiktoken file (replaces bpe)
    qwen_emo: Path  # the emotion-from-text model's folder (config.yaml's qwen_emo_path); optional

    @staticmethod
    def of(root: str | Path, cfg: IndexTTS2Config | None = None, **overrides: str | Path | None) -> "CheckpointPaths":
        """The files of the folder `root`, for `cfg` (default: its config.yaml, or the `config` override,
        with the family its files show). 2.5 configs carry fixed file names (config.FIXED_NAMES_25). The
        emotion model folder is optional, but a `qwen_emo` override must exist."""
        root = Path(root)
        if cfg is None:
            family = folder_family(root, overrides.get("codec"), overrides.get("tokenizer"))
            cfg = load_config(overrides.get("config") or root / "config.yaml", family)
        hf = root / "hf_cache"
        paths = dict(
            root=root, config=root / "config.yaml", gpt=root / cfg.gpt_checkpoint, s2mel=root / cfg.s2mel_checkpoint,
            bpe=root / cfg.bpe_model, w2v_stats=root / cfg.w2v_stat, emo_matrix=root / cfg.emo_matrix,
            spk_matrix=root / cfg.spk_matrix, w2v_bert=hf / "w2v-bert-2.0",
            semantic_codec=hf / "semantic_codec_model.safetensors", campplus=hf / "campplus_cn_common.bin",
            bigvgan=hf / "bigvgan", codec=root / CODEC_FILE, tokenizer=root / TIKTOKEN_FILE,
            qwen_emo=root / str(cfg.raw.get("qwen_emo_path") or QWEN_EMO_FOLDER),
        )
        if overrides.get("qwen_emo") is not None and not Path(overrides["qwen_emo"]).is_dir():
            raise CheckpointError(f"--qwen-emo {overrides['qwen_emo']}: no such folder (the emotion model folder "
                                  "holds config.json, model.safetensors and the tokenizer files)")
        paths.update({k: Path(v) for k, v in overrides.items() if v is not None})
        return CheckpointPaths(**paths)


def _flatten(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, torch.Tensor):
            out[key] = v
    return out


def read_torch_file(path: Path) -> dict | torch.Tensor:
    """`torch.load` with weights only (the official files hold only tensors and dicts)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; check the checkpoint folder or pass its path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format file: mmap is impossible, load normally
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read it as a torch checkpoint ({e})") from e
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read it as a torch checkpoint ({e})") from e


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU, in the file's dtype."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; check the checkpoint folder or pass its path")
    try:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError, OSError and others
        raise CheckpointError(f"{path}: cannot read it as a safetensors file ({e})") from e


def read_state_dict(path: Path, wrapper: str | None = None) -> dict[str, torch.Tensor]:
    """A flat {key: tensor} dict; `wrapper` (e.g. "model") is unwrapped when present."""
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if wrapper and isinstance(obj.get(wrapper), dict):
        obj = obj[wrapper]
    return _flatten(obj)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every `X.weight_g` / `X.weight_v` pair by `X.weight = g * v / ||v||`.

    torch's weight_norm (dim=0) normalises over every axis but the first; for ConvTranspose1d that
    first axis is the input channel (architecture §4.1). Our modules hold plain folded weights."""
    out = {}
    for key, t in state.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            base = key[: -len("_v")]
            g = state.get(base + "_g")
            if g is None:
                raise CheckpointError(f"'{key}' has no matching '{base}_g' (weight norm pair)")
            norm = t.float().flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))
            out[base] = (g.float() * t.float() / norm).to(t.dtype)
        else:
            out[key] = t
    return out


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], file: str | Path,
                extras: tuple[str, ...] = ()) -> None:
    """Copy `state` into `module`, requiring exactly the module's keys and shapes."""
    expected = module.state_dict()
    problems = []
    for key, t in expected.items():
        if key not in state:
            problems.append(f"missing tensor '{key}' (expected shape {list(t.shape)})")
        elif tuple(state[key].shape) != tuple(t.shape):
            problems.append(f"tensor '{key}' has shape {list(state[key].shape)}, expected {list(t.shape)}")
    allowed = [re.compile(p) for p in extras]
    for key in state:
        if key not in expected and not any(p.fullmatch(key) for p in allowed):
            problems.append(f"unexpected tensor '{key}' (shape {list(state[key].shape)})")
    if problems:
        more = f" ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(
            f"{file}: does not match the official layout for this config.yaml: "
            + "; ".join(problems[:10]) + more
        )
    module.load_state_dict({k: state[k] for k in expected}, strict=True)


def load_gpt(paths: CheckpointPaths, cfg: IndexTTS2Config):
    """UnifiedVoice from `gpt.pth` (plain state dict or wrapped in 'model'), strictly, in the layout of
    cfg's family (2.5: spk_emb_proj and lang_embedding, no speaker Conformer/Perceiver, no speed_emb)."""
    from .modules.gpt import UnifiedVoice

    model = UnifiedVoice(cfg.gpt)
    load_strict(model, read_state_dict(paths.gpt, wrapper="model"), paths.gpt, KNOWN_EXTRAS["gpt.pth"])
    return model.eval()


def read_matrix(path: Path) -> torch.Tensor:
    """feat1.pt / feat2.pt: one bare tensor."""
    obj = read_torch_file(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2:
        raise CheckpointError(f"{path}: expected one 2-D tensor")
    return obj.float()
