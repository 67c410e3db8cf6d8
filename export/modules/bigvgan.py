"""BigVGAN v2 vocoder (nvidia/bigvgan_v2_22khz_80band_256x): natural-log mel -> 22 kHz waveform.

A plain re-implementation of upstream's `indextts/s2mel/modules/bigvgan/` (the NVIDIA BigVGAN v2 code,
torch path of the anti-aliased activation; architecture §2.5). Attribute names equal the keys of
`bigvgan_generator.pt` (`{"generator": state}`) with the `generator.` prefix stripped and weight norm
folded: every convolution is stored as `weight_g` / `weight_v` and becomes a plain `weight` at load,
as upstream's `remove_weight_norm()` does (upstream-quirks.md item 12).

    mel (B, num_mels, T) -> conv_pre -> 6 x [ConvTranspose1d x u -> mean of 3 AMPBlock1] ->
    Activation1d(SnakeBeta) -> conv_post -> clamp(-1, 1)  ->  wav (B, 1, prod(u) * T)

Export notes: upstream's up/down-samplers expand the [1, 1, K] filter to [C, 1, K] with C read from
`x.shape`, which the legacy exporter rejects (architecture §4.3); here C is the channel count the
module was built with, a Python int. The filters stay [1, 1, K] persistent buffers, as in the file.
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


class SnakeBeta(nn.Module):
    """x + 1 / (beta + 1e-9) * sin(alpha * x)^2, per channel; alpha, beta stored as logs when logscale."""

    def __init__(self, channels: int, logscale: bool):
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)  # (1, C, 1)
        beta = self.beta.view(1, -1, 1)
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        # upstream writes 1.0 / (beta + 1e-9), which torch evaluates as reciprocal(.) * 1.0: same numbers
        return x + torch.reciprocal(beta + 1e-9) * torch.sin(x * alpha).pow(2)


class UpSample1d(nn.Module):
    """Zero-stuffing upsampler: replicate-pad, ratio * depthwise conv_transpose1d (stride ratio), crop.

    Computed in polyphase form, which is the same sum: output sample ratio * j + p only meets the taps
    h[ratio * k + p], so each phase p is a plain depthwise conv1d with those K / ratio taps (reversed),
    and the phases are interleaved. ONNX Runtime's CPU ConvTranspose has no fast depthwise path (it took
    ~40 % of BigVGAN's time); its depthwise Conv does. Output length is exactly ratio * T."""

    def __init__(self, channels: int, ratio: int = ANTI_ALIAS_RATIO, kernel_size: int = ANTI_ALIAS_TAPS):
        super().__init__()
        assert kernel_size % ratio == 0, (kernel_size, ratio)
        self.channels, self.ratio = channels, ratio
        self.pad = kernel_size // ratio - 1  # 5
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2  # 15
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2  # 15 (> 0: a negative slice end)
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def phases(self) -> torch.Tensor:
        """(ratio, 1, K / ratio): phase p's taps h[ratio * k + p], reversed for conv1d's correlation."""
        taps = self.filter.view(-1, self.ratio).transpose(0, 1)  # (ratio, K / ratio): [p, k] = h[ratio k + p]
        return taps.flip(-1)[:, None, :]

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
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

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


class Activation1d(nn.Module):
    """Anti-aliased SnakeBeta: upsample 2x, activate, downsample 2x (length preserved)."""

    def __init__(self, channels: int, logscale: bool):
        super().__init__()
        self.act = SnakeBeta(channels, logscale)
        self.upsample = UpSample1d(channels)
        self.downsample = DownSample1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock1(nn.Module):
    """For each dilation d: x += conv2(act(conv1_d(act(x)))); "same" padding d * (k - 1) / 2."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], logscale: bool):
        super().__init__()

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=d * (kernel_size - 1) // 2)

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        # activations 0, 2, 4 precede convs1; 1, 3, 5 precede convs2
        self.activations = nn.ModuleList(Activation1d(channels, logscale) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            xt = c1(self.activations[2 * i](x))
            xt = c2(self.activations[2 * i + 1](xt))
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
        x = self.conv_pre(mel)  # (B, c0, T)
        for i, (up,) in enumerate(self.ups):
            x = up(x)  # (B, C / 2, u * T)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))  # (B, 1, hop * T)
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
