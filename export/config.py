"""Typed views of an IndexTTS2 checkpoint's configuration.

`load_config` reads the official `config.yaml`; `load_w2v_config` and `load_bigvgan_config` read the
external models' own `config.json` files. Every dimension our modules use comes from here, never from
constants, so a checkpoint with other sizes loads as long as it has the official structure.

Upstream hard-codes a few widths in code rather than in config.yaml. They are optional extra keys here
whose defaults are the official values (so the official file loads unchanged and our tiny test config
can be small):

    gpt.semantic_dim          1024  width of the w2v-BERT features fed to both Conformers
    gpt.condition_num_latent  32    Perceiver latents of the speaker conditioning
    s2mel.gpt_dim             1280  input width of s2mel's gpt_layer (= the GPT width upstream)
    semantic_layer            17    which w2v-BERT hidden state is the semantic feature
    gpt.lang_embedding_rows   107   IndexTTS-2.5: rows of lang_embedding (upstream's 106 languages + 1)

Two model families share this file format. Which one a folder holds is decided by its files, never by
its config.yaml (checkpoint.folder_family): IndexTTS-2.5 ships `codec.pth` and a tiktoken tokenizer, and
its published config.yaml says `version: 2.0` and names its weights by absolute paths of the machine it
was trained on. For 2.5 every file therefore has its fixed name (`IndexTTS2Config.from_dict`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file is missing, unreadable or lacks a required key."""


FAMILIES = ("2.0", "2.5")  # IndexTTS-2 and IndexTTS-2.5
# How the GPT is conditioned on the speaker, per family: 2.0 runs a Conformer + Perceiver over the
# w2v-BERT features (32 latents); 2.5 projects the CAMPPlus style vector to one row (`spk_emb_proj`).
SPEAKER_CONDITIONING = {"2.0": "conformer_perceiver", "2.5": "campplus"}
LANG_EMBEDDING_ROWS = 107  # upstream hard-codes nn.Embedding(len(LANGUAGE_DICT) + 1, model_dim)


def _take(block: dict, key: str, where: str, default: Any = ...) -> Any:
    if key in block:
        return block[key]
    if default is ...:
        raise ConfigError(f"{where}: missing key '{key}'")
    return default


@dataclass(frozen=True)
class ConformerConfig:
    """`gpt.condition_module` / `gpt.emo_condition_module` (upstream ConformerEncoder + Perceiver)."""

    output_size: int
    linear_units: int
    attention_heads: int
    num_blocks: int
    input_layer: str = "conv2d2"
    perceiver_mult: int = 2
    cnn_module_kernel: int = 15  # upstream constructor default, not in config.yaml
    pos_max_len: int = 5000  # RelPositionalEncoding table length (a buffer in gpt.pth)

    @staticmethod
    def from_dict(d: dict, where: str) -> "ConformerConfig":
        cfg = ConformerConfig(
            output_size=int(_take(d, "output_size", where)),
            linear_units=int(_take(d, "linear_units", where)),
            attention_heads=int(_take(d, "attention_heads", where)),
            num_blocks=int(_take(d, "num_blocks", where)),
            input_layer=str(_take(d, "input_layer", where, "conv2d2")),
            perceiver_mult=int(_take(d, "perceiver_mult", where, 2)),
        )
        if cfg.input_layer != "conv2d2":
            raise ConfigError(f"{where}.input_layer: only 'conv2d2' is supported, got {cfg.input_layer!r}")
        return cfg


@dataclass(frozen=True)
class GPTConfig:
    """`gpt:` block: UnifiedVoice (GPT-2 body, embeddings, heads, conditioning encoders)."""

    model_dim: int
    heads: int
    layers: int
    max_mel_tokens: int
    max_text_tokens: int
    number_text_tokens: int
    number_mel_codes: int
    start_mel_token: int
    stop_mel_token: int
    start_text_token: int
    stop_text_token: int
    condition_module: ConformerConfig | None  # None only for campplus, which does not build it
    emo_condition_module: ConformerConfig
    semantic_dim: int = 1024
    condition_num_latent: int = 32  # speaker rows of the prefix: always 1 for campplus
    speaker_conditioning: str = "conformer_perceiver"  # or "campplus" (SPEAKER_CONDITIONING)
    style_dim: int = 192  # campplus: input width of spk_emb_proj (= s2mel's CAMPPlus style width)
    lang_embedding_rows: int = LANG_EMBEDDING_ROWS  # campplus: rows of lang_embedding

    @property
    def campplus(self) -> bool:
        """IndexTTS-2.5's conditioning: spk_emb_proj(style) and lang_embedding, no speaker Conformer."""
        return self.speaker_conditioning == "campplus"

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.heads

    @property
    def mel_positions(self) -> int:
        """Rows of mel_pos_embedding: max_mel_tokens + 2 (start/stop) + 1 (upstream's extra row)."""
        return self.max_mel_tokens + 3

    @property
    def text_positions(self) -> int:
        """Rows of text_pos_embedding: max_text_tokens + 2 (start/stop text tokens)."""
        return self.max_text_tokens + 2

    @property
    def prefix_rows(self) -> int:
        """Conditioning rows before the text: speaker latents + two speed rows (zeros in 2.5)."""
        return self.condition_num_latent + 2

    @staticmethod
    def from_dict(d: dict, speaker_conditioning: str = "conformer_perceiver", style_dim: int = 192) -> "GPTConfig":
        """The `gpt:` block; `style_dim` (s2mel's CAMPPlus width) sizes spk_emb_proj under campplus.

        campplus (2.5) builds neither the speaker Conformer nor the Perceiver, so `condition_module` may be
        absent and `condition_num_latent` is 1 (the projected style row) whatever the block says."""
        w = "config.yaml gpt"
        if speaker_conditioning not in SPEAKER_CONDITIONING.values():
            raise ConfigError(f"{w}: unknown speaker conditioning {speaker_conditioning!r}")
        campplus = speaker_conditioning == "campplus"
        cond = d.get("condition_module") if campplus else _take(d, "condition_module", w)
        cfg = GPTConfig(
            model_dim=int(_take(d, "model_dim", w)),
            heads=int(_take(d, "heads", w)),
            layers=int(_take(d, "layers", w)),
            max_mel_tokens=int(_take(d, "max_mel_tokens", w)),
            max_text_tokens=int(_take(d, "max_text_tokens", w)),
            number_text_tokens=int(_take(d, "number_text_tokens", w)),
            number_mel_codes=int(_take(d, "number_mel_codes", w)),
            start_mel_token=int(_take(d, "start_mel_token", w)),
            stop_mel_token=int(_take(d, "stop_mel_token", w)),
            start_text_token=int(_take(d, "start_text_token", w)),
            stop_text_token=int(_take(d, "stop_text_token", w)),
            condition_module=None if cond is None else ConformerConfig.from_dict(cond, f"{w}.condition_module"),
            emo_condition_module=ConformerConfig.from_dict(
                _take(d, "emo_condition_module", w), f"{w}.emo_condition_module"
            ),
            semantic_dim=int(_take(d, "semantic_dim", w, 1024)),
            condition_num_latent=1 if campplus else int(_take(d, "condition_num_latent", w, 32)),
            speaker_conditioning=speaker_conditioning,
            style_dim=style_dim,
            lang_embedding_rows=int(_take(d, "lang_embedding_rows", w, LANG_EMBEDDING_ROWS)),
        )
        if cfg.model_dim % cfg.heads:
            raise ConfigError(f"{w}: model_dim {cfg.model_dim} is not a multiple of heads {cfg.heads}")
        ctype = _take(d, "condition_type", w, "conformer_perceiver")
        if ctype != "conformer_perceiver":
            raise ConfigError(f"{w}.condition_type: only 'conformer_perceiver' is supported, got {ctype!r}")
        return cfg


@dataclass(frozen=True)
class SemanticCodecConfig:
    """`semantic_codec:` block (MaskGCT RepCodec + factorized VQ)."""

    codebook_size: int
    hidden_size: int
    codebook_dim: int
    vocos_dim: int
    vocos_intermediate_dim: int
    vocos_num_layers: int

    @staticmethod
    def from_dict(d: dict) -> "SemanticCodecConfig":
        w = "config.yaml semantic_codec"
        return SemanticCodecConfig(**{f.name: int(_take(d, f.name, w)) for f in fields(SemanticCodecConfig)})


@dataclass(frozen=True)
class MelConfig:
    """`s2mel.preprocess_params`: the prompt / vocoder log-mel spectrogram."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float | None  # None only when config.yaml holds the string "None" (upstream quirk)

    @staticmethod
    def from_dict(d: dict) -> "MelConfig":
        w = "config.yaml s2mel.preprocess_params"
        sp = _take(d, "spect_params", w)
        ws = f"{w}.spect_params"
        fmax_raw = _take(sp, "fmax", ws, "None")
        # upstream: `fmax = None if spect_params.fmax == "None" else 8000`
        fmax = None if fmax_raw == "None" else 8000.0
        return MelConfig(
            sample_rate=int(_take(d, "sr", w)),
            n_fft=int(_take(sp, "n_fft", ws)),
            win_length=int(_take(sp, "win_length", ws)),
            hop_length=int(_take(sp, "hop_length", ws)),
            n_mels=int(_take(sp, "n_mels", ws)),
            fmin=float(_take(sp, "fmin", ws, 0)),
            fmax=fmax,
        )


@dataclass(frozen=True)
class LengthRegulatorConfig:
    channels: int
    in_channels: int
    content_codebook_size: int
    sampling_ratios: tuple[int, ...]

    @staticmethod
    def from_dict(d: dict) -> "LengthRegulatorConfig":
        w = "config.yaml s2mel.length_regulator"
        return LengthRegulatorConfig(
            channels=int(_take(d, "channels", w)),
            in_channels=int(_take(d, "in_channels", w)),
            content_codebook_size=int(_take(d, "content_codebook_size", w)),
            sampling_ratios=tuple(int(r) for r in _take(d, "sampling_ratios", w)),
        )


@dataclass(frozen=True)
class DiTConfig:
    hidden_dim: int
    num_heads: int
    depth: int
    in_channels: int
    content_dim: int
    content_codebook_size: int
    long_skip_connection: bool
    uvit_skip_connection: bool
    wavenet_hidden_dim: int
    wavenet_num_layers: int
    wavenet_kernel_size: int
    wavenet_dilation_rate: int
    block_size: int = 16384  # upstream ignores config's block_size and hard-codes 16384

    @staticmethod
    def from_dicts(d: dict, wn: dict) -> "DiTConfig":
        w, ww = "config.yaml s2mel.DiT", "config.yaml s2mel.wavenet"
        for key, want in (("time_as_token", False), ("style_as_token", False), ("is_causal", False)):
            if bool(_take(d, key, w, want)) != want:
                raise ConfigError(f"{w}.{key}: only {want} is supported")
        return DiTConfig(
            hidden_dim=int(_take(d, "hidden_dim", w)),
            num_heads=int(_take(d, "num_heads", w)),
            depth=int(_take(d, "depth", w)),
            in_channels=int(_take(d, "in_channels", w)),
            content_dim=int(_take(d, "content_dim", w)),
            content_codebook_size=int(_take(d, "content_codebook_size", w)),
            long_skip_connection=bool(_take(d, "long_skip_connection", w)),
            uvit_skip_connection=bool(_take(d, "uvit_skip_connection", w)),
            wavenet_hidden_dim=int(_take(wn, "hidden_dim", ww)),
            wavenet_num_layers=int(_take(wn, "num_layers", ww)),
            wavenet_kernel_size=int(_take(wn, "kernel_size", ww)),
            wavenet_dilation_rate=int(_take(wn, "dilation_rate", ww)),
        )


@dataclass(frozen=True)
class S2MelConfig:
    """`s2mel:` block: length regulator, DiT flow-matching estimator, gpt_layer."""

    mel: MelConfig
    style_dim: int
    length_regulator: LengthRegulatorConfig
    dit: DiTConfig
    gpt_dim: int = 1280

    @staticmethod
    def from_dict(d: dict) -> "S2MelConfig":
        w = "config.yaml s2mel"
        return S2MelConfig(
            mel=MelConfig.from_dict(_take(d, "preprocess_params", w)),
            style_dim=int(_take(_take(d, "style_encoder", w), "dim", f"{w}.style_encoder")),
            length_regulator=LengthRegulatorConfig.from_dict(_take(d, "length_regulator", w)),
            dit=DiTConfig.from_dicts(_take(d, "DiT", w), _take(d, "wavenet", w)),
            gpt_dim=int(_take(d, "gpt_dim", w, 1280)),
        )


# IndexTTS-2.5 reads its files by these names (infer_v2_5 joins the model folder with config paths that
# are absolute in the published config.yaml, so only the names can be trusted).
FIXED_NAMES_25 = {"gpt_checkpoint": "gpt.pth", "s2mel_checkpoint": "s2mel.pth", "w2v_stat": "wav2vec2bert_stats.pt",
                  "emo_matrix": "feat2.pt", "spk_matrix": "feat1.pt"}


@dataclass(frozen=True)
class IndexTTS2Config:
    """The whole `config.yaml`, plus the file names it points at (fixed names for 2.5) and the family."""

    gpt: GPTConfig
    semantic_codec: SemanticCodecConfig
    s2mel: S2MelConfig
    emo_num: tuple[int, ...]
    gpt_checkpoint: str = "gpt.pth"
    s2mel_checkpoint: str = "s2mel.pth"
    w2v_stat: str = "wav2vec2bert_stats.pt"
    emo_matrix: str = "feat2.pt"
    spk_matrix: str = "feat1.pt"
    bpe_model: str = "bpe.model"
    semantic_layer: int = 17
    version: str = "2.0"  # as config.yaml says; not trusted (2.5's published file says 2.0): see `family`
    family: str = "2.0"  # "2.0" or "2.5" (FAMILIES), decided by the checkpoint folder's files
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_25(self) -> bool:
        return self.family == "2.5"

    @staticmethod
    def from_dict(d: dict, family: str = "2.0") -> "IndexTTS2Config":
        """The parsed config of a `family` checkpoint. For 2.5 the file names come from FIXED_NAMES_25,
        whatever config.yaml says."""
        w = "config.yaml"
        if family not in FAMILIES:
            raise ConfigError(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}")
        dataset = d.get("dataset") or {}
        s2mel = S2MelConfig.from_dict(_take(d, "s2mel", w))
        cfg = IndexTTS2Config(
            gpt=GPTConfig.from_dict(_take(d, "gpt", w), SPEAKER_CONDITIONING[family], s2mel.style_dim),
            semantic_codec=SemanticCodecConfig.from_dict(_take(d, "semantic_codec", w)),
            s2mel=s2mel,
            emo_num=tuple(int(n) for n in _take(d, "emo_num", w)),
            gpt_checkpoint=str(_take(d, "gpt_checkpoint", w, "gpt.pth")).strip(),
            s2mel_checkpoint=str(_take(d, "s2mel_checkpoint", w, "s2mel.pth")).strip(),
            w2v_stat=str(_take(d, "w2v_stat", w, "wav2vec2bert_stats.pt")).strip(),
            emo_matrix=str(_take(d, "emo_matrix", w, "feat2.pt")).strip(),
            spk_matrix=str(_take(d, "spk_matrix", w, "feat1.pt")).strip(),
            bpe_model=str(dataset.get("bpe_model", "bpe.model")).strip(),
            semantic_layer=int(_take(d, "semantic_layer", w, 17)),
            version=str(d.get("version", "2.0")),
            family=family,
            raw=d,
        )
        return replace(cfg, **FIXED_NAMES_25) if family == "2.5" else cfg


def load_config(path: str | Path, family: str | None = None) -> IndexTTS2Config:
    """Read an IndexTTS2 `config.yaml`. `family` None: decided by the folder that holds the file
    (checkpoint.folder_family: IndexTTS-2.5 when it also holds codec.pth and the tiktoken tokenizer)."""
    path = Path(path)
    if family is None:
        from .checkpoint import folder_family  # checkpoint imports this module

        family = folder_family(path.parent)
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: not found; pass the checkpoint folder that holds config.yaml") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read it as YAML ({e})") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return IndexTTS2Config.from_dict(d, family)


# transformers' Wav2Vec2BertConfig defaults (= facebook/w2v-bert-2.0); a config.json may omit any of them.
W2V_BERT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feature_projection_input_dim": 160,
    "hidden_act": "swish",
    "layer_norm_eps": 1e-5,
    "position_embeddings_type": "relative_key",
    "left_max_position_embeddings": 64,
    "right_max_position_embeddings": 8,
    "conv_depthwise_kernel_size": 31,
    "add_adapter": False,
    "use_intermediate_ffn_before_adapter": False,
}


@dataclass(frozen=True)
class W2VBertConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    feature_projection_input_dim: int
    layer_norm_eps: float
    left_max_position_embeddings: int
    right_max_position_embeddings: int
    conv_depthwise_kernel_size: int


def load_w2v_config(path: str | Path) -> W2VBertConfig:
    """Read w2v-BERT 2.0's `config.json`; missing keys take Wav2Vec2BertConfig's defaults."""
    d = _read_json(path)
    merged = {**W2V_BERT_DEFAULTS, **d}
    if merged["position_embeddings_type"] != "relative_key":
        raise ConfigError(f"{path}: only position_embeddings_type 'relative_key' is supported")
    return W2VBertConfig(**{f.name: merged[f.name] for f in fields(W2VBertConfig)})


@dataclass(frozen=True)
class BigVGANConfig:
    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    activation: str
    snake_logscale: bool
    use_tanh_at_final: bool
    use_bias_at_final: bool
    sampling_rate: int
    hop_size: int


def load_bigvgan_config(path: str | Path) -> BigVGANConfig:
    """Read BigVGAN's `config.json` (the NVIDIA repo's hyper-parameter file)."""
    d = _read_json(path)
    try:
        cfg = BigVGANConfig(
            num_mels=int(d["num_mels"]),
            upsample_rates=tuple(d["upsample_rates"]),
            upsample_kernel_sizes=tuple(d["upsample_kernel_sizes"]),
            upsample_initial_channel=int(d["upsample_initial_channel"]),
            resblock=str(d["resblock"]),
            resblock_kernel_sizes=tuple(d["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(x) for x in d["resblock_dilation_sizes"]),
            activation=str(d["activation"]),
            snake_logscale=bool(d.get("snake_logscale", True)),
            use_tanh_at_final=bool(d.get("use_tanh_at_final", True)),
            use_bias_at_final=bool(d.get("use_bias_at_final", True)),
            sampling_rate=int(d["sampling_rate"]),
            hop_size=int(d["hop_size"]),
        )
    except KeyError as e:
        raise ConfigError(f"{path}: missing key {e}") from e
    if cfg.resblock != "1" or cfg.activation != "snakebeta":
        raise ConfigError(f"{path}: only resblock '1' with 'snakebeta' activation is supported")
    return cfg


# Qwen3Config's defaults (transformers 4.52) for the keys a config.json may leave out
QWEN3_DEFAULTS: dict[str, Any] = {
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "use_sliding_window": False,
}


_CASTS = {"int": int, "float": float, "bool": bool}  # field type (a string under postponed annotations) -> cast


@dataclass(frozen=True)
class QwenConfig:
    """The emotion model's Qwen3 decoder (its folder's `config.json`; qwen-emotion.md)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool


def load_qwen_config(path: str | Path) -> QwenConfig:
    """Read a Qwen3 causal LM's `config.json` (qwen_config_from_dict)."""
    return qwen_config_from_dict(_read_json(path), path)


def qwen_config_from_dict(raw: dict, path: str | Path) -> QwenConfig:
    """A Qwen3 `config.json`'s values (`path` names it in messages); refuse what our module does not
    compute (another model type or activation, rope scaling, sliding-window attention)."""
    d = {**QWEN3_DEFAULTS, **raw}
    unsupported = [
        ("model_type", d.get("model_type"), "qwen3"), ("hidden_act", d["hidden_act"], "silu"),
        ("rope_scaling", d["rope_scaling"], None), ("use_sliding_window", d["use_sliding_window"], False),
    ]
    for key, value, wanted in unsupported:
        if value != wanted:
            raise ConfigError(f"{path}: {key} {value!r} is not supported (a Qwen3 causal LM with {key} "
                              f"{wanted!r} is)")
    try:
        cfg = QwenConfig(**{f.name: _CASTS[f.type](d[f.name]) for f in fields(QwenConfig)})
    except KeyError as e:
        raise ConfigError(f"{path}: missing key {e}") from e
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ConfigError(f"{path}: num_attention_heads {cfg.num_attention_heads} is not a multiple of "
                          f"num_key_value_heads {cfg.num_key_value_heads}")
    return cfg


def _read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: not found") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it as JSON ({e})") from e
