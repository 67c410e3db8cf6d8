"""IndexTTS2's s2mel stage: `gpt_layer`, the length regulator, the DiT loader and a torch CFM reference.

`s2mel.pth` is `{"net": {"cfm": ..., "length_regulator": ..., "gpt_layer": ...}}` (architecture.md §2.2).
The modules here follow upstream's `indextts/s2mel/modules/commons.py` (MyModel), `length_regulator.py`
(InterpolateRegulator) and `flow_matching.py` (CFM); the DiT estimator lives in `dit.py`. Attribute names
equal the keys of each sub-dict. `load_s2mel` loads all three strictly (upstream silently skips keys
that do not match). IndexTTS-2.5's `s2mel.pth` has the same layout, but 2.5 builds no gpt_layer: its
tensors are declared extras there (allowed, unused, not required).

`cfm_reference` is upstream's Euler / classifier-free-guidance loop with the noise passed in, the torch
ground truth for the runtime's numpy loop around the exported DiT.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import CheckpointError, fold_weight_norm, load_strict, read_state_dict
from ..config import IndexTTS2Config, LengthRegulatorConfig, S2MelConfig
from .dit import DiT, dit_unused_keys

GPT_LAYER_HIDDEN = (256, 128)  # hard-coded in upstream's MyModel: Linear(1280, 256), (256, 128), (128, 1024)

# Keys of `net.gpt_layer` an IndexTTS-2.5 s2mel.pth may carry (upstream ships them, commit a16fe86) and
# never reads: 2.5 has no latent pass.
GPT_LAYER_EXTRAS_25: tuple[str, ...] = (r"\d+\.(weight|bias)",)

# Keys of `net.length_regulator` that upstream stores but never reads for continuous input.
LR_UNUSED_KEYS: tuple[str, ...] = (
    r"embedding\.weight",  # discrete-token table (is_discrete: false)
    r"mask_token",  # training-time token drop
)


class GptLayer(nn.Sequential):
    """GPT latent (B, N, gpt_dim) -> codec feature width (B, N, in_channels): three Linears, no activation."""

    def __init__(self, cfg: S2MelConfig):
        widths = (cfg.gpt_dim, *GPT_LAYER_HIDDEN, cfg.length_regulator.in_channels)
        super().__init__(*(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])))


def nearest_source_index(t_in: int, t_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(source index, output position) of `F.interpolate(mode='nearest')` from t_in to t_out frames.

    torch computes src = min(floor(i * s), t_in - 1) with s = float32(t_in) / float32(t_out) and the
    product in float32; doing the same (not exact integer division) reproduces it bit for bit.
    `t_out` is a 0-d int64 tensor so that the output length stays a graph input when exported."""
    n_out = t_out.item()  # data dependent: an unbacked size under torch.export (int() would specialise)
    torch._check(n_out > 0)
    pos = torch.arange(n_out, device=t_out.device)  # (t_out,)
    scale = torch.full((), t_in, dtype=torch.float32, device=t_out.device) / t_out.float()
    src = torch.floor(pos.float() * scale).long().clamp(max=t_in - 1)  # (t_out,)
    return src, pos


class LengthRegulator(nn.Module):
    """Upstream InterpolateRegulator for continuous input: project, stretch (nearest), 4 conv blocks.

    Each block is Conv1d k3 -> GroupNorm(1, C) -> Mish; GroupNorm(1, C) normalises over all channels AND
    all frames (quirk 11), so the output of a frame depends on the whole sequence, padding included."""

    def __init__(self, cfg: LengthRegulatorConfig):
        super().__init__()
        c = cfg.channels
        if not cfg.sampling_ratios:
            raise ValueError("length_regulator.sampling_ratios is empty: the non-interpolating variant is unsupported")
        blocks: list[nn.Module] = []
        for _ in cfg.sampling_ratios:  # only the count matters upstream
            blocks += [nn.Conv1d(c, c, 3, 1, 1), nn.GroupNorm(1, c), nn.Mish()]
        self.model = nn.Sequential(*blocks, nn.Conv1d(c, c, 1, 1))
        self.content_in_proj = nn.Linear(cfg.in_channels, c)

    def forward(self, x: torch.Tensor, out_len: torch.Tensor) -> torch.Tensor:
        """x : float32, shape = (B, T_in, in_channels); out_len : int64, shape = () or (B,)
        returns : float32, shape = (B, max(out_len), channels), frames >= out_len[b] zeroed."""
        h = self.content_in_proj(x).transpose(1, 2)  # (B, C, T_in)
        src, pos = nearest_source_index(h.shape[2], out_len.max())
        h = self.model(h.index_select(2, src))  # (B, C, T_out)
        valid = pos[None, :] < out_len.reshape(-1, 1)  # (B or 1, T_out): upstream sequence_mask(ylens)
        return h.transpose(1, 2) * valid[:, :, None]  # (B, T_out, C)


# --- loading -----------------------------------------------------------------------------------------

_PARTS = ("cfm", "length_regulator", "gpt_layer")


def split_s2mel_state(state: dict[str, torch.Tensor], file: Path,
                      required: tuple[str, ...] = _PARTS) -> dict[str, dict[str, torch.Tensor]]:
    """Flat `net`-relative keys -> one dict per sub-module, `module.` (DDP) prefixes stripped like upstream.

    The cfm part is returned relative to its estimator (`estimator.` removed): that is the DiT. Each part
    in `required` must hold tensors."""
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in _PARTS}
    for key, t in state.items():
        part, _, rest = key.partition(".")
        if part not in parts:
            raise CheckpointError(f"{file}: unexpected tensor 'net.{key}' (expected net.{{{','.join(_PARTS)}}}.*)")
        rest = rest.removeprefix("module.")
        if part == "cfm":
            if not rest.startswith("estimator."):
                raise CheckpointError(f"{file}: unexpected tensor 'net.{key}' (the cfm holds only its estimator)")
            rest = rest[len("estimator."):]
        parts[part][rest] = t
    for part, d in parts.items():
        if part in required and not d:
            raise CheckpointError(f"{file}: no tensors under 'net.{part}'; is this an IndexTTS2 s2mel.pth?")
    return parts


def load_s2mel(path: str | Path, cfg: IndexTTS2Config) -> tuple[GptLayer | None, LengthRegulator, DiT]:
    """(gpt_layer, length_regulator, dit) from `s2mel.pth`, strictly, weight norm folded, in eval mode.

    IndexTTS-2.5 (cfg.is_25) has no gpt_layer: it is None, and the file's `net.gpt_layer` tensors, if any,
    are only checked to be linear weights and biases."""
    path = Path(path)
    required = ("cfm", "length_regulator") if cfg.is_25 else _PARTS
    parts = split_s2mel_state(read_state_dict(path, wrapper="net"), path, required)
    s2 = cfg.s2mel
    regulator, dit = LengthRegulator(s2.length_regulator), DiT(s2)
    if cfg.is_25:
        gpt_layer = None
        load_strict(nn.Module(), parts["gpt_layer"], f"{path} [net.gpt_layer]", GPT_LAYER_EXTRAS_25)
    else:
        gpt_layer = GptLayer(s2)
        load_strict(gpt_layer, parts["gpt_layer"], f"{path} [net.gpt_layer]")
    load_strict(regulator, parts["length_regulator"], f"{path} [net.length_regulator]", LR_UNUSED_KEYS)
    try:
        dit_state = fold_weight_norm(parts["cfm"])
    except CheckpointError as e:
        raise CheckpointError(f"{path} [net.cfm.estimator]: {e}") from e
    load_strict(dit, dit_state, f"{path} [net.cfm.estimator]", dit_unused_keys(s2.dit))
    return (None if gpt_layer is None else gpt_layer.eval()), regulator.eval(), dit.eval()


# --- CFM reference -----------------------------------------------------------------------------------


@torch.no_grad()
def cfm_reference(dit: DiT, mu: torch.Tensor, x_lens: torch.Tensor, prompt_mel: torch.Tensor,
                  style: torch.Tensor, noise: torch.Tensor, steps: int = 25, cfg_rate: float = 0.7) -> torch.Tensor:
    """Upstream `CFM.solve_euler` (quirk 9) with caller-supplied noise.

    mu : (1, T, content_dim); x_lens : int64 (1,); prompt_mel : (1, 80, T_ref); style : (1, style_dim);
    noise : (1, 80, T) (upstream: randn * temperature). Returns (1, 80, T) with the prompt frames zero.

    Upstream's loop sets dt = t_span[k] - t_span[k-1] at the top of every step and accumulates
    t += dt in float32 (its trailing `dt = t_span[k+1] - t` is overwritten before use). The CFG batch is
    [x, x] / [prompt_x, 0] / [style, 0] / [mu, 0] with the same t and the batch-1 x_lens (broadcast)."""
    t_span = torch.linspace(0, 1, steps + 1)
    n_ref = prompt_mel.shape[-1]
    prompt_x = torch.zeros_like(noise)
    prompt_x[..., :n_ref] = prompt_mel
    x = noise.clone()
    x[..., :n_ref] = 0
    t = t_span[0]
    for k in range(1, steps + 1):
        dt = t_span[k] - t_span[k - 1]
        if cfg_rate > 0:
            v = dit(torch.cat([x, x]), torch.cat([prompt_x, torch.zeros_like(prompt_x)]), x_lens,
                    torch.stack([t, t]), torch.cat([style, torch.zeros_like(style)]),
                    torch.cat([mu, torch.zeros_like(mu)]))  # (2, 80, T)
            v_cond, v_uncond = v.chunk(2)
            v = (1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond
        else:
            v = dit(x, prompt_x, x_lens, t[None], style, mu)
        x = x + dt * v
        t = t + dt
        x[:, :, :n_ref] = 0
    return x
