"""w2v-BERT 2.0 semantic encoder: the first `semantic_layer` Conformer layers of facebook/w2v-bert-2.0.

Upstream runs transformers' `Wav2Vec2BertModel(output_hidden_states=True)` and keeps
`hidden_states[semantic_layer]` (17), then normalises it with `wav2vec2bert_stats.pt` as
`(h - mean) / sqrt(var)` (architecture §1.2 step 2, §2.6). This is a plain re-implementation of what
transformers 4.52.1 (`modeling_wav2vec2_bert.py`) computes in eval mode, for the official config
(`position_embeddings_type "relative_key"`, swish activations, no adapter). Attribute names equal the
keys of `model.safetensors`, which carry no prefix.

Facts the code below relies on (each checked against the transformers source):
* `hidden_states[0]` is the projected input *after* padded frames are zeroed; `hidden_states[k]` is the
  output of encoder layer k - 1. So `hidden_states[17]` needs exactly 17 layers (0..16) and nothing
  after them (the encoder has no final norm, the adapter acts only on the last hidden state).
* Padded frames (attention_mask 0) are zeroed once before layer 0 and again inside every convolution
  module, right after its first LayerNorm. In attention the mask is additive on the *keys*:
  `(1 - mask) * finfo.min`. Padded frames still get an output (upstream uses it: an odd fbank frame
  count leaves the last stacked frame masked, architecture §3.4).
* Relative-key attention: scores = (q k^T + q E[clamp(j - i, -left, right) + left]^T) / sqrt(head_dim),
  i the query frame, j the key frame, q including linear_q's bias, no extra content/position biases.
* The depthwise convolution is causal: left padding kernel_size - 1, no right padding, no bias.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, load_strict, read_torch_file
from ..config import ConfigError, W2VBertConfig, load_w2v_config

# Tensors of model.safetensors that no SemanticEncoder holds, whatever its layer count:
# `masked_spec_embed` is SpecAugment's training-time mask vector; an adapter or intermediate FFN (absent
# from the official file) would act only on the last hidden state, never on hidden_states[k].
W2V_UNUSED_KEYS: tuple[str, ...] = (r"masked_spec_embed", r"adapter\..+", r"intermediate_ffn\..+")


def w2v_unused_keys(cfg: W2VBertConfig, num_layers: int) -> tuple[str, ...]:
    """`load_strict` extras for a SemanticEncoder of `num_layers` layers: W2V_UNUSED_KEYS plus every
    tensor of the encoder layers num_layers .. cfg.num_hidden_layers - 1 (computed and discarded
    upstream). Layer indices beyond the config's layer count stay errors."""
    dropped = "|".join(str(i) for i in range(num_layers, cfg.num_hidden_layers))
    layers = (rf"encoder\.layers\.(?:{dropped})\..+",) if dropped else ()
    return W2V_UNUSED_KEYS + layers


class FeatureProjection(nn.Module):
    """LayerNorm over the 160 stacked fbank values, then Linear to the model width."""

    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.feature_projection_input_dim, eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.feature_projection_input_dim, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x))


class FeedForward(nn.Module):
    """output_dense(swish(intermediate_dense(x))); the caller scales it by 0.5 (macaron half-step)."""

    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.silu(self.intermediate_dense(x)))


class RelativeKeySelfAttention(nn.Module):
    """Multi-head self-attention with a learned bias per clamped key-minus-query distance.

    `distance_embedding` has left + right + 1 rows of head_dim; row `clamp(j - i, -left, right) + left`
    is dotted with query i to score key j. transformers gathers the rows into a (T, T, head_dim) table
    and uses an einsum; we dot q with all P = left + right + 1 rows first and pick the (T, T) scores with
    one flat index (ONNX Gather with a (T * T,) index shared by batch and heads): the same products
    without the T^2 x head_dim table.
    """

    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        d = cfg.hidden_size
        assert d % cfg.num_attention_heads == 0, f"hidden_size {d} is not a multiple of the head count"
        self.h = cfg.num_attention_heads
        self.d_k = d // self.h
        self.left = cfg.left_max_position_embeddings
        self.right = cfg.right_max_position_embeddings
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)
        self.distance_embedding = nn.Embedding(self.left + self.right + 1, self.d_k)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x : (B, T, d); key_bias : (B, 1, 1, T), 0 for valid keys and finfo.min for padded ones."""
        B, T, C = x.shape
        q = self.linear_q(x).view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)
        k = self.linear_k(x).view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)
        v = self.linear_v(x).view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)
        P = self.distance_embedding.num_embeddings
        pos = torch.arange(T, device=x.device)
        row = (pos[None, :] - pos[:, None]).clamp(-self.left, self.right) + self.left  # (T, T) [i, j]
        flat = (pos[:, None] * P + row).reshape(-1)  # (T * T,) index into the (T, P) scores of each head
        q_e = (q @ self.distance_embedding.weight.t()).reshape(B, self.h, T * P)  # (B, h, T * P)
        rel = q_e.index_select(-1, flat).view(B, self.h, T, T)  # (B, h, T, T)
        scores = (q @ k.transpose(-2, -1) + rel) / math.sqrt(self.d_k) + key_bias  # (B, h, T, T)
        y = scores.softmax(dim=-1) @ v  # (B, h, T, d_k)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, h * d_k)
        return self.linear_out(y)


class ConvolutionModule(nn.Module):
    """LayerNorm -> zero padded frames -> pointwise conv -> GLU -> causal depthwise conv -> LayerNorm ->
    swish -> pointwise conv. No conv has a bias."""

    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        d, k = cfg.hidden_size, cfg.conv_depthwise_kernel_size
        self.layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, k, groups=d, bias=False)
        self.depthwise_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x : (B, T, d); keep : bool (B, T, 1), False on padded frames."""
        x = self.layer_norm(x).masked_fill(~keep, 0.0).transpose(1, 2)  # (B, d, T)
        x = F.glu(self.pointwise_conv1(x), dim=1)  # (B, d, T)
        x = F.pad(x, (self.depthwise_conv.kernel_size[0] - 1, 0))  # (B, d, T + k - 1), causal
        x = self.depthwise_conv(x).transpose(1, 2)  # (B, T, d)
        x = F.silu(self.depthwise_layer_norm(x)).transpose(1, 2)  # (B, d, T)
        return self.pointwise_conv2(x).transpose(1, 2)  # (B, T, d)


class ConformerLayer(nn.Module):
    """FFN half-step, attention, convolution, FFN half-step, final LayerNorm (pre-norm residuals)."""

    def __init__(self, cfg: W2VBertConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.ffn1_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn1 = FeedForward(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = RelativeKeySelfAttention(cfg)
        self.conv_module = ConvolutionModule(cfg)
        self.ffn2_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn2 = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_bias)
        x = x + self.conv_module(x, keep)  # the conv module normalises its own input
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class Encoder(nn.Module):
    def __init__(self, cfg: W2VBertConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([ConformerLayer(cfg) for _ in range(num_layers)])


class SemanticEncoder(nn.Module):
    """(B, T, 160) stacked fbank features + (B, T) mask -> (B, T, hidden) normalised semantic features.

    Holds the feature projection and the first `num_layers` encoder layers (num_layers = semantic_layer,
    17 officially); `mean` / `std` are non-persistent buffers (they come from wav2vec2bert_stats.pt, not
    from model.safetensors), identity until `set_stats` fills them.
    """

    def __init__(self, cfg: W2VBertConfig, num_layers: int):
        super().__init__()
        if not 0 <= num_layers <= cfg.num_hidden_layers:
            raise ConfigError(
                f"semantic_layer {num_layers} is out of range: w2v-BERT has hidden states 0..{cfg.num_hidden_layers}"
            )
        self.cfg = cfg
        self.feature_projection = FeatureProjection(cfg)
        self.encoder = Encoder(cfg, num_layers)
        self.register_buffer("mean", torch.zeros(cfg.hidden_size), persistent=False)
        self.register_buffer("std", torch.ones(cfg.hidden_size), persistent=False)

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Normalise outputs as (h - mean) / sqrt(var), as upstream does with wav2vec2bert_stats.pt."""
        shape = tuple(self.mean.shape)
        if tuple(mean.shape) != shape or tuple(var.shape) != shape:
            raise ValueError(f"stats must have shape {list(shape)}, got mean {list(mean.shape)}, var {list(var.shape)}")
        self.mean.copy_(mean.float())
        self.std.copy_(var.float().sqrt())

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """
        input_features : float32, shape = (B, T, feature_projection_input_dim)
        attention_mask : int or float, shape = (B, T); 1 on valid frames, 0 on padded ones
        returns : float32, shape = (B, T, hidden_size), normalised hidden_states[num_layers]
        """
        x = self.feature_projection(input_features)  # (B, T, d)
        keep = (attention_mask != 0)[..., None]  # (B, T, 1)
        x = x.masked_fill(~keep, 0.0)
        key_bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        for layer in self.encoder.layers:
            x = layer(x, key_bias, keep)
        return (x - self.mean) / self.std


def _read_safetensors(path: Path, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The tensors named in `wanted`; every other key as a meta tensor of its shape (enough for
    `load_strict`'s checks, and the discarded layers 17-23 of the official file are never read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {
                k: f.get_tensor(k) if k in wanted else torch.empty(f.get_slice(k).get_shape(), device="meta")
                for k in f.keys()
            }
    except Exception as e:  # safetensors raises its own SafetensorError, OSError and others
        raise CheckpointError(f"{path}: cannot read it as a safetensors file ({e})") from e


def _read_stats(path: Path, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    stats = read_torch_file(path)
    if not isinstance(stats, dict) or not all(isinstance(stats.get(k), torch.Tensor) for k in ("mean", "var")):
        raise CheckpointError(f"{path}: expected a dict with tensors 'mean' and 'var' (wav2vec2bert_stats.pt)")
    for key in ("mean", "var"):
        if tuple(stats[key].shape) != (dim,):
            raise CheckpointError(
                f"{path}: tensor '{key}' has shape {list(stats[key].shape)}, expected [{dim}] (w2v-BERT hidden_size)"
            )
    return stats["mean"].float(), stats["var"].float()


def load_semantic_encoder(w2v_dir: Path, stats_path: Path, semantic_layer: int) -> SemanticEncoder:
    """SemanticEncoder from the w2v-bert-2.0 folder (config.json, model.safetensors) and the stats file,
    loaded strictly, in eval mode."""
    w2v_dir, stats_path = Path(w2v_dir), Path(stats_path)
    config_path, weights_path = w2v_dir / "config.json", w2v_dir / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointError(
                f"{p}: file not found; the w2v-BERT folder must hold facebook/w2v-bert-2.0's config.json "
                "and model.safetensors"
            )
    cfg = load_w2v_config(config_path)
    model = SemanticEncoder(cfg, semantic_layer)
    state = _read_safetensors(weights_path, set(model.state_dict()))
    extras = w2v_unused_keys(cfg, semantic_layer)
    load_strict(model, state, weights_path, extras)
    model.set_stats(*_read_stats(stats_path, cfg.hidden_size))
    return model.eval()

