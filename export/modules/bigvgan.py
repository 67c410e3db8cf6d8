"""BigVGAN v2 vocoder (nvidia/bigvgan_v2_22khz_80band_256x): natural-log mel -> 22 kHz waveform.

A plain re-implementation of upstream's `indextts/s2mel/modules/bigvgan/` (the NVIDIA BigVGAN v2 code,
torch path of the anti-aliased activation; architecture §2.5). Attribute names equal the keys of
`bigvgan_generator.pt` (`{"generator": state}`) with the `generator.` prefix stripped and weight norm
folded: every convolution is stored as `weight_g` / `weight_v` and becomes a plain `weight` at load,
as upstream's `remove_weight_norm()` does (upstream-quirks.md item 12).

    mel (B, num_mels, T) -> conv_pre -> 6 x [ConvTranspose1d x u -> mean of 3 AMPBlock1] ->
    Activation1d(SnakeBeta) -> conv_post -> clamp(-1, 1)  ->  wav (B, 1, prod(u) * T)

Export notes: upstream's up/down-samplers expand the [1, 1, K] filter to [C, 1, K] with C read from
`x.shape`, which the legacy exporter rejects (architecture §4.3); here the per-channel taps are derived
from the parameters. The filters stay [1, 1, K] persistent buffers, as in the file.

Speed (ONNX Runtime CPU): the anti-aliased activation is evaluated on its two polyphase components with
SnakeBeta's constants folded into the filters (Activation1d), and the generator runs in a (B, C, 1, T)
layout whose convolutions ONNX Runtime executes in its blocked NCHWc format (`conv`). The sums are
upstream's, reassociated: outputs agree to float32 rounding (tests/export/test_bigvgan.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, fold_weight_norm, load_strict, read_torch_file
from ..config import BigVGANConfig, load_bigvgan_config

ANTI_ALIAS_RATIO = 2  # Activation1d: up 2x, activate, down 2x (upstream defaults, not in config.json)
ANTI_ALIAS_TAPS = 12
PRE_POST_KERNEL = 7  # conv_pre / conv_post: k 7, padding 3


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass, float32 (1, 1, kernel_size), taps summing to 1.

    As upstream's `kaiser_sinc_filter1d`: Kaiser's design formulas with transition width
    delta_f = 4 * half_width and attenuation A = 2.285 * (kernel_size // 2 - 1) * pi * delta_f + 7.95;
    even kernels sample the sinc at half-integer times. For cutoff 0.25 / half-width 0.3 / 12 taps:
    A = 51.03, beta = 0.1102 (A - 8.7) = 4.66."""
    assert 0 < cutoff <= 0.5, cutoff
    half = kernel_size // 2
    A = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if A > 50.0:
        beta = 0.1102 * (A - 8.7)
    elif A >= 21.0:
        beta = 0.5842 * (A - 21.0) ** 0.4 + 0.07886 * (A - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)  # float32, symmetric
    if kernel_size % 2 == 0:
        t = torch.arange(-half, half) + 0.5
    else:
        t = (torch.arange(kernel_size) - half).float()
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * t)  # torch.sinc(x) = sin(pi x) / (pi x)
    taps = taps / taps.sum()  # unit DC gain (no leakage of the constant component)
    return taps.view(1, 1, kernel_size)


# --- layout: every op acts on the last (time) axis, of (B, C, T) or (B, C, 1, T) tensors -------------
#
# BigVGAN.forward runs in (B, C, 1, T): ONNX Runtime's x86 CPU provider lays 2-D convolutions out in its
# blocked NCHWc format (channels padded to the SIMD block, 16 with AVX-512), whose direct convolution
# kernels run the dense convs at the cores' FMA peak and the depthwise filters ~2x faster than 1-D Conv
# (im2col + GEMM / per-tap loops). The same graph in 1-D took 1.16-1.24x longer (2 AVX-512 cores).
# The modules accept (B, C, T) as well: the same sums with 1-D ops.


def conv(x: torch.Tensor, m: nn.Conv1d) -> torch.Tensor:
    """m (a Conv1d, stride 1) on the time axis of x (B, C_in, T) or (B, C_in, 1, T)."""
    if x.dim() == 3:
        return m(x)
    return F.conv2d(x, m.weight.unsqueeze(2), m.bias, padding=(0, m.padding[0]), dilation=(1, m.dilation[0]))


def conv_transpose(x: torch.Tensor, m: nn.ConvTranspose1d) -> torch.Tensor:
    """m (a ConvTranspose1d) on the time axis of x (B, C_in, T) or (B, C_in, 1, T)."""
    if x.dim() == 3:
        return m(x)
    return F.conv_transpose2d(x, m.weight.unsqueeze(2), m.bias, stride=(1, m.stride[0]), padding=(0, m.padding[0]))


def per_channel(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1) or (1, C, 1, 1): broadcasts over the batch and time axes of an ndim tensor."""
    return v.view(1, -1, *([1] * (ndim - 2)))


def depthwise(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Correlate channel c of x (B, C, [1,] L) with taps[c] (taps (C, n)): (B, C, [1,] L - n + 1), no padding.

    A group-per-channel Conv with one output per group: ONNX Runtime's fast depthwise path (a Conv with
    two outputs per group, as a two-phase upsampler would be, took over 3x longer)."""
    channels = x.shape[1]
    if x.dim() == 3:
        return F.conv1d(x, taps[:, None, :], bias, groups=channels)
    return F.conv2d(x, taps[:, None, None, :], bias, groups=channels)


def pad_time(x: torch.Tensor, pad: tuple[int, int], mode: str = "replicate") -> torch.Tensor:
    """Pad the last axis of a 3-D or 4-D tensor (F.pad's replicate mode wants a pair per spatial axis)."""
    return F.pad(x, pad if x.dim() == 3 else (*pad, 0, 0), mode=mode)


class SnakeBeta(nn.Module):
    """x + 1 / (beta + 1e-9) * sin(alpha * x)^2, per channel; alpha, beta stored as logs when logscale."""

    def __init__(self, channels: int, logscale: bool):
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, 1 / (beta + 1e-9)), each (C,): the per-channel numbers the formula uses."""
        alpha, beta = self.alpha, self.beta
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        # upstream writes 1.0 / (beta + 1e-9), which torch evaluates as reciprocal(.) * 1.0: same numbers
        return alpha, torch.reciprocal(beta + 1e-9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, inv_beta = (per_channel(v, x.dim()) for v in self.coefficients())
        s = torch.sin(x * alpha)
        return x + inv_beta * (s * s)  # torch computes pow(2) as s * s: the same numbers; ONNX Mul, not Pow


def upsample_phase_index(ratio: int, kernel_size: int, pad: int,
                         crop_left: int) -> tuple[list[list[int]], tuple[int, int]]:
    """Which filter tap each phase of UpSample1d applies at each offset, as plain correlations.

    UpSample1d's output sample n = ratio * i + p (phase p) is ratio * sum_k h[k] * x[clamp(j - pad)] over
    the j, k with ratio * j + k = n + crop_left (zero stuffing, transposed conv, crop), i.e. input offset
    o = j - pad - i = (p + crop_left - k) / ratio - pad where that is an integer. On x replicate-padded by
    (left, right) = (-min o, max o), phase p is a correlation with taps [p, o + left] = ratio * h[k].
    Returns (index (ratio, left + right + 1): the k of each tap, -1 where a phase has none; (left, right)).
    For ratio 2, 12 taps: offsets -3..3, so 7 taps per phase, one of them zero."""
    taps = [(p, (p + crop_left - k) // ratio - pad, k) for p in range(ratio) for k in range(kernel_size)
            if (p + crop_left - k) % ratio == 0]
    left, right = -min(o for _, o, _ in taps), max(o for _, o, _ in taps)
    index = [[-1] * (left + right + 1) for _ in range(ratio)]
    for p, o, k in taps:
        index[p][o + left] = k
    return index, (left, right)


def downsample_phase_index(ratio: int, kernel_size: int, pad_left: int) -> tuple[list[list[int]], tuple[int, int]]:
    """Which low-pass tap applies to which phase and offset when DownSample1d reads a polyphase signal.

    DownSample1d computes y[t] = sum_k f[k] * z[clamp(ratio * t + k - pad_left)] (replicate padding, stride
    ratio). With n = k - pad_left = ratio * s + p (0 <= p < ratio), tap k reads phase p of z (z_p[i] =
    z[ratio * i + p]) at offset s: y = sum_p correlate(z_p padded by (left, right), taps[p]), with
    (left, right) = (-min s, max s) and taps [p, s + left] = f[k]. The clamp becomes: every phase padded
    with z[0] (= z_0[0]) on the left and z[ratio T - 1] (= z_{ratio-1}[T - 1]) on the right, the samples
    the replicate padding of the interleaved signal repeats. Returns (index (ratio, left + right + 1), -1
    where a phase has no tap; (left, right)). For ratio 2, 12 taps: offsets -3..3, 7 taps per phase."""
    offsets = [k - pad_left for k in range(kernel_size)]
    left, right = -min(n // ratio for n in offsets), max(n // ratio for n in offsets)
    index = [[-1] * (left + right + 1) for _ in range(ratio)]
    for k, n in enumerate(offsets):
        index[n % ratio][n // ratio + left] = k
    return index, (left, right)


def gather_taps(filt: torch.Tensor, index: list[list[int]], gain: float = 1.0) -> torch.Tensor:
    """(rows, n) taps gain * filt[index], 0 where the index is -1; filt is a (1, 1, K) filter buffer."""
    h = torch.cat([filt.flatten(), filt.new_zeros(1)])  # (K + 1,): index -1 reads the appended zero
    return gain * h[torch.tensor(index)]


class UpSample1d(nn.Module):
    """Zero-stuffing upsampler: replicate-pad, ratio * depthwise conv_transpose1d (stride ratio), crop.

    Computed in polyphase form, which is the same sum: output sample ratio * j + p only meets the taps
    h[ratio * k + p], so each phase p is a plain depthwise conv1d with those K / ratio taps (reversed),
    and the phases are interleaved. ONNX Runtime's CPU ConvTranspose has no fast depthwise path (it took
    ~40 % of BigVGAN's time); its depthwise Conv does. Output length is exactly ratio * T.
    Activation1d uses the phases without interleaving them (`phase_taps`)."""

    def __init__(self, channels: int, ratio: int = ANTI_ALIAS_RATIO, kernel_size: int = ANTI_ALIAS_TAPS):
        super().__init__()
        assert kernel_size % ratio == 0, (kernel_size, ratio)
        self.channels, self.ratio = channels, ratio
        self.pad = kernel_size // ratio - 1  # 5
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2  # 15
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2  # 15 (> 0: a negative slice end)
        self.phase_index, self.phase_pad = upsample_phase_index(ratio, kernel_size, self.pad, self.crop_left)
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def phases(self) -> torch.Tensor:
        """(ratio, 1, K / ratio): phase p's taps h[ratio * k + p], reversed for conv1d's correlation."""
        taps = self.filter.view(-1, self.ratio).transpose(0, 1)  # (ratio, K / ratio): [p, k] = h[ratio k + p]
        return taps.flip(-1)[:, None, :]

    def phase_taps(self) -> torch.Tensor:
        """(ratio, n): phase p of the output = correlate(replicate_pad(x, phase_pad), row p); gain folded in."""
        return gather_taps(self.filter, self.phase_index, float(self.ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad), mode="replicate")  # (B, C, L), L = T + 2 pad
        taps = self.phases().shape[-1]
        # (C * ratio, 1, K / ratio): group c -> its phases; the gain `ratio` (a power of 2: exact) folded in
        w = (self.ratio * self.phases()).repeat(self.channels, 1, 1)
        y = F.conv1d(F.pad(x, (taps - 1, taps - 1)), w, groups=self.channels)  # (B, C * ratio, L + taps - 1)
        # (B, C, ratio, n) -> (B, C, n, ratio) -> (B, C, ratio * n): sample ratio * j + p = phase p at j
        y = y.unflatten(1, (self.channels, self.ratio)).transpose(2, 3).flatten(2)
        return y[..., self.crop_left : -self.crop_right]  # (B, C, ratio * T)


class LowPassFilter1d(nn.Module):
    """Replicate-pad (K/2 - 1, K/2) for even K, then depthwise conv1d with the low-pass at `stride`."""

    def __init__(self, channels: int, cutoff: float, half_width: float, stride: int, kernel_size: int):
        super().__init__()
        self.channels, self.stride = channels, stride
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)  # 5
        self.pad_right = kernel_size // 2  # 6
        self.phase_index, self.phase_pad = downsample_phase_index(stride, kernel_size, self.pad_left)
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def phase_taps(self) -> torch.Tensor:
        """(stride, n): the output = sum over phases p of correlate(edge-padded phase p, row p)."""
        return gather_taps(self.filter, self.phase_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        w = self.filter.expand(self.channels, -1, -1)  # (C, 1, K)
        return F.conv1d(x, w, stride=self.stride, groups=self.channels)


class DownSample1d(nn.Module):
    """Low-pass then keep every ratio-th sample; T -> T // ratio (2T -> T here)."""

    def __init__(self, channels: int, ratio: int = ANTI_ALIAS_RATIO, kernel_size: int = ANTI_ALIAS_TAPS):
        super().__init__()
        self.lowpass = LowPassFilter1d(channels, 0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


def edge_pad(z: torch.Tensor, first: torch.Tensor, last: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """z (B, C, [1,] T) with `first` / `last` (B, C, [1,] 1) repeated pad[0] / pad[1] times before / after it."""
    lead = z.shape[:-1]
    return torch.cat([first.expand(*lead, pad[0]), z, last.expand(*lead, pad[1])], dim=-1)


class Activation1d(nn.Module):
    """Anti-aliased SnakeBeta: upsample 2x, activate, downsample 2x (length preserved).

    Computed on the polyphase components, never interleaved: phase p of the upsampled signal u is a
    depthwise correlation of the replicate-padded input (UpSample1d.phase_taps), SnakeBeta acts on each
    phase (it is per sample), and the stride-2 low-pass is the sum over phases of a stride-1 correlation
    of each phase (LowPassFilter1d.phase_taps), each phase padded with the first and last samples of the
    interleaved signal, as the replicate padding does. No interleaving Transpose, crop, stride-2 or
    two-outputs-per-group Conv (ONNX Runtime's slow paths): only depthwise Convs.

    SnakeBeta is evaluated as sin^2(a u) = (1 - cos(2 a u)) / 2 with its per-channel constants folded into
    the linear filters around it (exact algebra; the rounding differs from the written formula by a few
    ulp of the cosine's argument, see `fold`):
        v = 2 a u                        (2 a folded into the upsampling taps)
        w = v - a / b' * cos(v)          (= 2 a * snake(u) - a / b', b' = beta + 1e-9)
        y = lowpass(w) / (2 a) + 1 / (2 b') * sum(taps)   (1 / (2 a) in the low-pass taps, the rest a bias)
    three elementwise passes per phase (Cos, Mul, Sub) instead of five (Mul, Sin, Mul, Mul, Add). alpha
    is exp(.) > 0 in the log-scale parametrisation (the official one); a linear-scale alpha may be 0, so
    that case keeps the plain formula."""

    def __init__(self, channels: int, logscale: bool):
        super().__init__()
        self.act = SnakeBeta(channels, logscale)
        self.upsample = UpSample1d(channels)
        self.downsample = DownSample1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.act.logscale:
            return self.plain(x)
        w_up, w_down, bias, c = self.fold()
        xp = pad_time(x, self.upsample.phase_pad)  # (B, C, [1,] T + 6)
        c = per_channel(c, x.dim())
        z = []
        for w in w_up:  # phase p: v = 2 a u_p, then w = v - c cos(v)
            v = depthwise(xp, w)  # (B, C, [1,] T)
            z.append(v - c * torch.cos(v))
        return self._lowpass(z, w_down, bias)

    def fold(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(upsampling taps (ratio, C, n) scaled by 2 a, low-pass taps (ratio, C, n) scaled by 1 / (2 a),
        the low-pass bias (C,) = sum(taps) / (2 b'), the cosine's factor c (C,) = a / b')."""
        alpha, inv_beta = self.act.coefficients()  # (C,) each
        two_alpha = 2.0 * alpha
        w_up = self.upsample.phase_taps()[:, None, :] * two_alpha[None, :, None]
        w_down = self.downsample.lowpass.phase_taps()
        bias = 0.5 * inv_beta * w_down.sum()
        return w_up, w_down[:, None, :] / two_alpha[None, :, None], bias, alpha * inv_beta

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The same polyphase evaluation with SnakeBeta written out (no constants folded)."""
        channels = x.shape[1]
        xp = pad_time(x, self.upsample.phase_pad)
        w_up = self.upsample.phase_taps()
        z = [self.act(depthwise(xp, w.expand(channels, -1))) for w in w_up]
        w_down = self.downsample.lowpass.phase_taps()[:, None, :].expand(-1, channels, -1)
        return self._lowpass(z, w_down, None)

    def _lowpass(self, z: list[torch.Tensor], w_down: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """sum_p correlate(edge-padded phase p, w_down[p]) (+ bias): the stride-2 low-pass of the
        interleaved signal whose phases are z."""
        pad = self.downsample.lowpass.phase_pad
        first, last = z[0][..., :1], z[-1][..., -1:]  # the interleaved signal's end samples
        out = depthwise(edge_pad(z[0], first, last, pad), w_down[0], bias)
        for zp, w in zip(z[1:], w_down[1:]):
            out = out + depthwise(edge_pad(zp, first, last, pad), w)
        return out  # (B, C, [1,] T)


class AMPBlock1(nn.Module):
    """For each dilation d: x += conv2(act(conv1_d(act(x)))); "same" padding d * (k - 1) / 2."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], logscale: bool):
        super().__init__()

        def conv1d(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=d * (kernel_size - 1) // 2)

        self.convs1 = nn.ModuleList(conv1d(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv1d(1) for _ in dilations)
        # activations 0, 2, 4 precede convs1; 1, 3, 5 precede convs2
        self.activations = nn.ModuleList(Activation1d(channels, logscale) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            xt = conv(self.activations[2 * i](x), c1)
            xt = conv(self.activations[2 * i + 1](xt), c2)
            x = x + xt
        return x


class BigVGAN(nn.Module):
    """The generator, weight norm folded. forward: mel (B, num_mels, T) -> wav (B, 1, hop * T) in [-1, 1]."""

    def __init__(self, cfg: BigVGANConfig):
        super().__init__()
        assert cfg.resblock == "1" and cfg.activation == "snakebeta", "only AMPBlock1 + SnakeBeta"
        assert len(cfg.upsample_rates) == len(cfg.upsample_kernel_sizes)
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        c0, k = cfg.upsample_initial_channel, PRE_POST_KERNEL
        self.conv_pre = nn.Conv1d(cfg.num_mels, c0, k, 1, padding=(k - 1) // 2)
        # ConvTranspose1d(C, C/2, k, u, padding (k - u) / 2): output length exactly u * T
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(c0 >> i, c0 >> (i + 1), ku, u, padding=(ku - u) // 2)])
            for i, (u, ku) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock1(c0 >> (i + 1), kr, tuple(d), cfg.snake_logscale)
            for i in range(len(self.ups))
            for kr, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        ch = c0 >> len(self.ups)
        self.activation_post = Activation1d(ch, cfg.snake_logscale)
        self.conv_post = nn.Conv1d(ch, 1, k, 1, padding=(k - 1) // 2, bias=cfg.use_bias_at_final)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = conv(mel.unsqueeze(2), self.conv_pre)  # (B, c0, 1, T): the 2-D layout (see `conv`)
        for i, (up,) in enumerate(self.ups):
            x = conv_transpose(x, up)  # (B, C / 2, 1, u * T)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = conv(self.activation_post(x), self.conv_post).squeeze(2)  # (B, 1, hop * T)
        if self.cfg.use_tanh_at_final:
            return torch.tanh(x)
        return x.clamp(-1.0, 1.0)


def checkpoint_shapes(model: BigVGAN) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of `bigvgan_generator.pt` for this model: every conv in weight-norm form.

    All convolutions of the generator carry torch's weight_norm (dim 0): `weight` becomes
    `weight_g` (shape[0], 1, 1) and `weight_v` (= weight's shape). For ConvTranspose1d dim 0 is the input
    channel. Keys are prefixed `generator.` as in the official key list."""
    convs = {name for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))}
    out = {}
    for key, t in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        shape = tuple(t.shape)
        if owner in convs and leaf == "weight":
            out[f"generator.{owner}.weight_g"] = (shape[0],) + (1,) * (len(shape) - 1)
            out[f"generator.{owner}.weight_v"] = shape
        else:
            out[f"generator.{key}"] = shape
    return out


def load_bigvgan(folder: str | Path) -> BigVGAN:
    """`config.json` + `bigvgan_generator.pt` of a BigVGAN folder (`hf_cache/bigvgan`), strictly, eval mode."""
    folder = Path(folder)
    model = BigVGAN(load_bigvgan_config(folder / "config.json"))
    path = folder / "bigvgan_generator.pt"
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("generator"), dict):
        raise CheckpointError(f"{path}: expected a dict {{'generator': state_dict}} as BigVGAN saves it")
    state = {f"generator.{k}": v for k, v in obj["generator"].items()}
    _check_keys(state, checkpoint_shapes(model), path)
    state = fold_weight_norm({k.removeprefix("generator."): v for k, v in state.items()})
    load_strict(model, state, path)
    return model.eval()


def _check_keys(state: dict, want: dict[str, tuple[int, ...]], path: Path) -> None:
    """Compare the file's keys (weight-norm form) with the model's, naming every mismatch."""
    problems = [f"missing tensor '{k}' (expected shape {list(s)})" for k, s in want.items() if k not in state]
    problems += [f"unexpected tensor '{k}'" for k in state if k not in want]
    problems += [
        f"tensor '{k}' has shape {list(getattr(state[k], 'shape', []))}, expected {list(s)}"
        for k, s in want.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != s
    ]
    if problems:
        more = f" ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(f"{path}: does not match the BigVGAN layout of config.json: "
                              + "; ".join(problems[:10]) + more)
