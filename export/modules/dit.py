"""The DiT flow-matching estimator of IndexTTS2's s2mel stage (`net.cfm.estimator` in `s2mel.pth`).

A plain re-implementation of upstream's `indextts/s2mel/modules/diffusion_transformer.py` (DiT), the
gpt-fast `Transformer` it wraps (`gpt_fast/model.py`) and the VITS-style WaveNet head (`wavenet.py` with
`encodec.py`'s SConv1d), see architecture.md §2.2.3 and upstream-quirks.md item 10. Attribute names
equal the checkpoint keys after weight norm is folded (`X.weight_g`/`X.weight_v` -> `X.weight`).

What differs from upstream's code, not its numerics:
* RoPE angles are computed from the `input_pos` buffer on the fly instead of indexing a precomputed
  16384-row table (same float32 formula: position * inverse frequency, then cos / sin);
* the key-padding mask is built once from `input_pos` and broadcast ([B, 1, 1, T]) instead of being
  repeated to [B, 1, T, T], and it is an additive bias (finfo.min) rather than a boolean mask;
* SConv1d pads with constants derived from the kernel (upstream computes them with `math.ceil` on the
  input length, which always gives the same numbers for stride 1), and the tanh-sigmoid gate is a plain
  function (upstream: a `torch.jit.script` function with a tensor argument);
* tensors upstream stores but never uses at inference are not attributes: `dit_unused_keys(cfg)`.

Export: RoPE and attention become ONNX Runtime's fused com.microsoft RotaryEmbedding and
MultiHeadAttention nodes (`rotary`, `key_padding_attention`, emitted with torch.onnx.ops.symbolic only
while exporting; torch runs the plain formulas). Their kernels exist on the CPU and CUDA providers in
fp32 and fp16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiTConfig, S2MelConfig

# Upstream constants that are not in config.yaml.
TIMESTEP_FREQ_DIM = 256  # TimestepEmbedder.frequency_embedding_size
TIMESTEP_MAX_PERIOD = 10000
TIMESTEP_SCALE = 1000  # t in [0, 1] is scaled to [0, 1000] before the sinusoids
ROPE_BASE = 10000
NORM_EPS = 1e-5  # gpt-fast RMSNorm
FINAL_NORM_EPS = 1e-6  # FinalLayer's affine-free LayerNorm

# Keys of `net.cfm.estimator` (relative to it) that upstream stores but never reads at inference.
DIT_UNUSED_KEYS: tuple[str, ...] = (
    r"x_embedder\..*",  # weight-normed Linear(80, hidden): built, never called in forward
    r"cond_embedder\.weight",  # discrete-content table; the model uses cond_projection (continuous)
    r"content_mask_embedder\.weight",  # training-time content dropout only
)

# Estimator submodules stored with torch weight_norm (keys `weight_g` / `weight_v`) in the file.
DIT_WEIGHT_NORM_KEYS: tuple[str, ...] = (
    r"final_layer\.linear",
    r"wavenet\.(cond_layer|in_layers\.\d+|res_skip_layers\.\d+)\.conv\.conv",
)


def uvit_skips(depth: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(layers that push their output, layers that pop one), upstream's `setup_caches` rule.

    Layers i < depth // 2 push, layers i > depth // 2 pop (last in, first out); the middle layer does
    neither. Depth 13: 0..5 push, 7..12 pop, so 7 <- 5, 8 <- 4, ..., 12 <- 0."""
    return tuple(range(depth // 2)), tuple(range(depth // 2 + 1, depth))


def dit_unused_keys(cfg: DiTConfig) -> tuple[str, ...]:
    """`DIT_UNUSED_KEYS` plus the `skip_in_linear` of every layer that never pops a U-ViT skip.

    Upstream gives every block a `skip_in_linear` when `uvit_skip_connection` is on, but only the
    popping layers call it (depth 13: layers 0..6 hold unused ones)."""
    if not cfg.uvit_skip_connection:
        return DIT_UNUSED_KEYS
    _, receive = uvit_skips(cfg.depth)
    idle = "|".join(str(i) for i in range(cfg.depth) if i not in receive)
    return DIT_UNUSED_KEYS + (rf"transformer\.layers\.({idle})\.skip_in_linear\..*",)


# --- embeddings and norms ---------------------------------------------------------------------------


def timestep_freqs(dim: int = TIMESTEP_FREQ_DIM, max_period: int = TIMESTEP_MAX_PERIOD) -> torch.Tensor:
    """exp(-ln(max_period) * arange(dim // 2) / (dim // 2)), float32: the `freqs` buffer upstream stores."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)


class TimestepEmbedder(nn.Module):
    """t (B,) -> MLP([cos(1000 t f), sin(1000 t f)]) (B, hidden); cos first (GLIDE order)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.register_buffer("freqs", timestep_freqs())  # persistent: the file holds the same values

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = TIMESTEP_SCALE * t[:, None].float() * self.freqs[None]  # (B, 128)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (B, hidden)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, computed in float32 (gpt-fast)."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class AdaptiveLayerNorm(nn.Module):
    """w * RMSNorm(x) + b with (w, b) = split(project_layer(c)): the time embedding modulates each norm."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        w, b = torch.split(self.project_layer(c), self.dim, dim=-1)  # 2 x (B, 1, dim)
        return w * self.norm(x) + b


# --- transformer (gpt-fast, non-causal, adaptive norms, U-ViT skips) -------------------------------


def rope_inv_freq(head_dim: int, base: float = ROPE_BASE) -> torch.Tensor:
    """1 / base^(2i / head_dim), i < head_dim // 2 (gpt-fast `precompute_freqs_cis`)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x (B, T, nh, hd) by the angles of (cos, sin) (T, hd/2).

    This is multiplication by exp(i * angle) with x[2i] the real and x[2i+1] the imaginary part."""
    xp = x.float().unflatten(-1, (-1, 2))  # (B, T, nh, hd/2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]  # (B, T, nh, hd/2) each
    c, s = cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, hd/2)
    out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1)  # (B, T, nh, hd/2, 2)
    return out.flatten(3).type_as(x)  # (B, T, nh, hd)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_head: int) -> torch.Tensor:
    """`apply_rope` on x (B, T, C = n_head * hd) with the angles' (cos, sin) (T, hd/2): (B, T, C).

    In torch: the formula itself. In ONNX: one com.microsoft RotaryEmbedding node (interleaved pairs,
    position t = frame t), ONNX Runtime's fused kernel: one pass over q or k instead of a split, four
    products, two sums and a stack (~6x cheaper at 1290 frames). It may fuse the multiply-adds, so it
    differs from the formula by an ulp (seen: 5e-7 on O(4) values)."""
    B, T, C = x.shape
    if torch.onnx.is_in_onnx_export():
        positions = torch.arange(T, device=x.device)[None, :].expand(B, T)  # (B, T) int64
        return torch.onnx.ops.symbolic("com.microsoft::RotaryEmbedding", (x, positions, cos, sin),
                                       {"interleaved": 1, "num_heads": n_head}, dtype=x.dtype, shape=(B, T, C),
                                       version=1)
    return apply_rope(x.unflatten(-1, (n_head, -1)), cos, sin).flatten(2)


def key_padding_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                          n_head: int) -> torch.Tensor:
    """Scaled dot-product attention of q, k, v (B, T, C = n_head * hd) over the keys where valid (B, T).

    In torch: SDPA with an additive key bias (finfo.min at invalid keys, not a boolean mask: a boolean
    SDPA mask exports with a NaN guard over every (B, nh, T, T) score tensor). In ONNX: one
    com.microsoft MultiHeadAttention node with the key-padding mask, ONNX Runtime's fused kernel (CPU
    and CUDA, fp32 and fp16): the (B, nh, T, T) scores are never a graph tensor, and the mask add, the
    softmax and the head transposes happen inside it (~20 % less time than the plain ops at 1290
    frames). Its masked keys get -10000 added instead of finfo.min: both give them weight exp(-10000 + ...)
    = 0 in float32 unless a query's scores span 10^4, and every query here has valid keys."""
    B, T, C = q.shape
    if torch.onnx.is_in_onnx_export():
        mask = valid.expand(B, -1).to(torch.int32)  # (B, T): 1 = attend (x_lens may be one row)
        return torch.onnx.ops.symbolic("com.microsoft::MultiHeadAttention", (q, k, v, None, mask),
                                       {"num_heads": n_head}, dtype=q.dtype, shape=(B, T, C), version=1)
    heads = lambda t: t.unflatten(-1, (n_head, -1)).transpose(1, 2)  # (B, nh, T, hd)
    bias = torch.zeros_like(valid, dtype=q.dtype).masked_fill(~valid, torch.finfo(q.dtype).min)
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=bias[:, None, None, :])
    return y.transpose(1, 2).flatten(2)  # (B, T, C)


class Attention(nn.Module):
    """Bias-free fused qkv self-attention with RoPE on q and k and a key-padding mask."""

    def __init__(self, dim: int, n_head: int):
        super().__init__()
        assert dim % n_head == 0, (dim, n_head)
        self.dim, self.n_head = dim, n_head
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)  # n_local_heads == n_head upstream
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, rope, valid):
        """x (B, T, dim); rope = (cos, sin) (T, hd/2) of the frames' angles; valid (B, T) bool key mask."""
        q, k, v = self.wqkv(x).split(self.dim, dim=-1)  # 3 x (B, T, dim)
        q, k = rotary(q, *rope, self.n_head), rotary(k, *rope, self.n_head)  # (B, T, dim) each
        return self.wo(key_padding_attention(q, k, v, valid, self.n_head))  # (B, T, dim)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def ffn_hidden(dim: int) -> int:
    """gpt-fast's intermediate size: int(2 * 4 dim / 3) rounded up to a multiple of 256 (512 -> 1536)."""
    n = int(2 * 4 * dim / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


class TransformerBlock(nn.Module):
    """[skip_in_linear(cat(x, skip))] -> x + attn(norm(x, c)) -> h + ffn(norm(h, c))."""

    def __init__(self, dim: int, n_head: int, takes_skip: bool):
        super().__init__()
        self.attention = Attention(dim, n_head)
        self.feed_forward = FeedForward(dim, ffn_hidden(dim))
        self.ffn_norm = AdaptiveLayerNorm(dim)
        self.attention_norm = AdaptiveLayerNorm(dim)
        if takes_skip:
            self.skip_in_linear = nn.Linear(2 * dim, dim)

    def forward(self, x, c, rope, valid, skip: torch.Tensor | None = None):
        if skip is not None:
            x = self.skip_in_linear(torch.cat([x, skip], dim=-1))  # (B, T, dim)
        h = x + self.attention(self.attention_norm(x, c), rope, valid)
        return h + self.feed_forward(self.ffn_norm(h, c))


class Transformer(nn.Module):
    """gpt-fast `Transformer` as the DiT uses it: non-causal, time-conditioned norms, U-ViT skips."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.emit, self.receive = uvit_skips(cfg.depth) if cfg.uvit_skip_connection else ((), ())
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.hidden_dim, cfg.num_heads, i in self.receive) for i in range(cfg.depth)
        )
        self.norm = AdaptiveLayerNorm(cfg.hidden_dim)

    def forward(self, x, c, rope, valid):
        skips = []
        for i, layer in enumerate(self.layers):
            x = layer(x, c, rope, valid, skips.pop() if i in self.receive else None)
            if i in self.emit:
                skips.append(x)
        return self.norm(x, c)


# --- WaveNet head -----------------------------------------------------------------------------------


class _Conv(nn.Module):
    """Holds the Conv1d as `.conv` (upstream NormConv1d; its weight-norm parametrisation is folded)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)


class SConv1d(nn.Module):
    """Stride-1 Conv1d with 'same' REFLECT padding: (k_eff - 1) split as left = total - total // 2.

    Upstream (encodec.py) ignores the `padding=` it is given and always pads this way; for stride 1 its
    extra right padding is 0. Reflect padding needs T > pad (upstream zero-extends shorter inputs; the
    DiT always runs on whole prompt + generated mels, so that case is not reproduced)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = _Conv(c_in, c_out, kernel, dilation)
        total = (kernel - 1) * dilation
        self.pad = (total - total // 2, total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad != (0, 0):
            x = F.pad(x, self.pad, mode="reflect")  # (B, C, T + total)
        return self.conv.conv(x)


def gated_tanh(a: torch.Tensor, n: int) -> torch.Tensor:
    """tanh(a[:, :n]) * sigmoid(a[:, n:]) (upstream `fused_add_tanh_sigmoid_multiply` after the add)."""
    t_part, s_part = torch.split(a, n, dim=1)  # 2 x (B, n, T)
    return torch.tanh(t_part) * torch.sigmoid(s_part)


class WaveNet(nn.Module):
    """VITS `WN` with global conditioning g (B, gin, 1) and a (B, 1, T) frame mask."""

    def __init__(self, hidden: int, kernel: int, dilation_rate: int, n_layers: int, gin: int):
        super().__init__()
        assert kernel % 2 == 1, kernel
        self.hidden, self.n_layers = hidden, n_layers
        self.cond_layer = SConv1d(gin, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList(
            SConv1d(hidden, 2 * hidden, kernel, dilation=dilation_rate**i) for i in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            SConv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1) for i in range(n_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # The input x is NOT masked first (upstream): padded frames reach valid ones via in_layers[0].
        g = self.cond_layer(g)  # (B, 2 H L, 1)
        h2 = 2 * self.hidden
        output = torch.zeros_like(x)
        for i in range(self.n_layers):
            acts = gated_tanh(self.in_layers[i](x) + g[:, i * h2:(i + 1) * h2, :], self.hidden)  # (B, H, T)
            res_skip = self.res_skip_layers[i](acts)  # (B, 2H or H, T)
            if i < self.n_layers - 1:
                x = (x + res_skip[:, : self.hidden]) * mask
                output = output + res_skip[:, self.hidden:]
            else:
                output = output + res_skip
        return output * mask


class FinalLayer(nn.Module):
    """LayerNorm (no affine) modulated by (shift, scale) = adaLN_modulation(c), then a Linear."""

    def __init__(self, hidden: int, c_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=FINAL_NORM_EPS)
        self.linear = nn.Linear(hidden, hidden)  # weight-normed in the file
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c_dim, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x (B, hidden)
        return self.linear(self.norm_final(x) * (1 + scale[:, None]) + shift[:, None])


# --- the estimator ----------------------------------------------------------------------------------


class DiT(nn.Module):
    """Velocity estimator v(x, t | prompt mel, content, style) of the CFM (`net.cfm.estimator`)."""

    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        d = cfg.dit
        if not d.long_skip_connection:
            raise ValueError("DiT: only long_skip_connection=true is supported (the official setting)")
        if d.wavenet_hidden_dim != d.hidden_dim:
            # FinalLayer(wavenet_hidden) is modulated by t1 (hidden_dim wide): upstream needs them equal
            raise ValueError(f"DiT: wavenet hidden {d.wavenet_hidden_dim} != DiT hidden {d.hidden_dim}")
        self.cfg = d
        h, wn = d.hidden_dim, d.wavenet_hidden_dim
        self.transformer = Transformer(d)
        self.cond_projection = nn.Linear(d.content_dim, h)
        self.t_embedder = TimestepEmbedder(h)
        self.register_buffer("input_pos", torch.arange(d.block_size))  # persistent, int64, in the file
        self.register_buffer("inv_freq", rope_inv_freq(h // d.num_heads), persistent=False)  # RoPE
        self.t_embedder2 = TimestepEmbedder(wn)
        self.conv1 = nn.Linear(h, wn)
        self.conv2 = nn.Conv1d(wn, d.in_channels, 1)
        self.wavenet = WaveNet(wn, d.wavenet_kernel_size, d.wavenet_dilation_rate, d.wavenet_num_layers, gin=wn)
        self.final_layer = FinalLayer(wn, h)
        self.res_projection = nn.Linear(h, wn)
        self.skip_linear = nn.Linear(h + d.in_channels, h)
        self.cond_x_merge_linear = nn.Linear(2 * d.in_channels + h + cfg.style_dim, h)

    @property
    def min_frames(self) -> int:
        """Shortest T the WaveNet's reflect padding accepts (pad < T); 3 for the official kernel 5."""
        return 1 + max(max(layer.pad) for layer in self.wavenet.in_layers)

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) (T, head_dim / 2) of the angles pos * inv_freq, float32 as gpt-fast's table."""
        angles = pos.float()[:, None] * self.inv_freq[None, :]  # (T, hd/2)
        return torch.cos(angles), torch.sin(angles)

    def forward(self, x, prompt_x, x_lens, t, style, cond):
        """One velocity evaluation.

        x : float32, shape = (B, 80, T)          current sample (prompt frames zeroed by the caller)
        prompt_x : float32, shape = (B, 80, T)   prompt mel in the first frames, zeros after
        x_lens : int64, shape = (B,) or (1,)     valid frames; upstream passes the full length T
        t : float32, shape = (B,)                flow time in [0, 1]
        style : float32, shape = (B, style_dim)  CAMPPlus speaker embedding
        cond : float32, shape = (B, T, content_dim)  length-regulated content
        returns : float32, shape = (B, 80, T)
        """
        T = x.shape[2]
        t1 = self.t_embedder(t)  # (B, h)
        x_t = x.transpose(1, 2)  # (B, T, 80)
        style_frames = style[:, None, :].expand(-1, T, -1)  # (B, T, style_dim)
        x_in = torch.cat([x_t, prompt_x.transpose(1, 2), self.cond_projection(cond), style_frames], dim=-1)
        x_in = self.cond_x_merge_linear(x_in)  # (B, T, h)

        pos = self.input_pos[:T]  # (T,): the stored arange, as upstream indexes it
        valid = pos[None, :] < x_lens[:, None]  # (B, T): upstream sequence_mask(x_lens, T)
        # the key-padding mask: an additive bias in torch, MultiHeadAttention's mask in ONNX
        # (key_padding_attention); masked and unmasked agree wherever a query has a valid key, which is
        # every query here
        h = self.transformer(x_in, t1[:, None, :], self.rope(pos), valid)  # (B, T, h)
        h = self.skip_linear(torch.cat([h, x_t], dim=-1))  # (B, T, h)

        mask = valid[:, None, :].to(h.dtype)  # (B, 1, T)
        w = self.wavenet(self.conv1(h).transpose(1, 2), mask, self.t_embedder2(t)[:, :, None])  # (B, wn, T)
        w = w.transpose(1, 2) + self.res_projection(h)  # (B, T, wn)
        return self.conv2(self.final_layer(w, t1).transpose(1, 2))  # (B, 80, T)
