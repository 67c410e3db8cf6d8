"""Non-degenerate random values for a checkpoint layout (random-weight stand-ins for the official files).

Goals: no all-zero tensor, norm gains that are not all one, activations that stay O(1) through deep
stacks, and every value a pure function of (seed, namespace, key): each tensor draws from its own
`torch.Generator` seeded by a hash of the three, so a file's bytes do not depend on the order in which
tensors are made, and two files with the same key (`feat1.pt` / `feat2.pt`) still differ.

One small function per rule; `pick_rule` chooses by key name and shape. Computed buffers (positions,
frequency tables, filters) are never randomised: callers pass them in (`random_state_dict(buffers=)`)
or keep the module's own (`randomize_module_` touches parameters only).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from .checkpoint_layout import Layout, TensorSpec

GAIN_STD = 0.1  # norm gains: 1 + GAIN_STD * N(0, 1)
BIAS_STD = 0.02  # biases and shifts
MEAN_STD = 0.1  # BatchNorm running means, feature-statistics means
LOG_SCALE_STD = 0.1  # SnakeBeta log-scale alpha / beta (upstream init: 0, i.e. alpha = beta = 1)
VAR_RANGE = (0.5, 1.5)  # BatchNorm running variances, feature-statistics variances
BATCH_COUNT_RANGE = (1_000, 1_000_000)  # BatchNorm num_batches_tracked (unused at inference)

# Tables looked up rather than multiplied: unit-variance rows (names as in the official files).
_EMBEDDING_KEY = re.compile(r"(emb|embedding|embedder|codebook|wte)\.weight$")
# HF GPT-2 Conv1D stores its weight as (in, out), so the fan-in is dim 0.
_IN_OUT_WEIGHT_KEY = re.compile(r"(^|\.)(c_attn|c_fc|c_proj)\.weight$")

Rule = Callable[[TensorSpec, torch.Generator], torch.Tensor]


def tensor_generator(seed: int, namespace: str, key: str) -> torch.Generator:
    """A generator private to one tensor: seeded by sha256(seed, namespace, key)."""
    digest = hashlib.sha256(f"{seed}\x00{namespace}\x00{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _normal(spec: TensorSpec, gen: torch.Generator, std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.empty(spec.shape).normal_(mean, std, generator=gen).to(spec.dtype)  # one pass over memory


# --- rules ------------------------------------------------------------------------------------------


def norm_gain(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    """LayerNorm / GroupNorm / BatchNorm / RMSNorm gains and layer scales: 1 + 0.1 N(0, 1)."""
    return _normal(spec, gen, GAIN_STD, mean=1.0)


def small_bias(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    return _normal(spec, gen, BIAS_STD)


def fan_in_weight(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    """Linear / Conv weights (out, in/groups, *kernel): N(0, 1/fan_in), so a layer keeps O(1) activations."""
    fan_in = math.prod(spec.shape[1:])
    return _normal(spec, gen, 1.0 / math.sqrt(fan_in))


def in_out_weight(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    """HF Conv1D weights (in, out): N(0, 1/in)."""
    return _normal(spec, gen, 1.0 / math.sqrt(spec.shape[0]))


def unit_normal(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    """Embedding tables, codebooks, learned latents / tokens / position biases, bare matrices: N(0, 1)."""
    return _normal(spec, gen, 1.0)


def small_mean(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    return _normal(spec, gen, MEAN_STD)


def positive_variance(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    lo, hi = VAR_RANGE
    return (lo + (hi - lo) * torch.rand(spec.shape, generator=gen)).to(spec.dtype)


def log_scale(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    return _normal(spec, gen, LOG_SCALE_STD)


def batch_count(spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    lo, hi = BATCH_COUNT_RANGE
    return torch.randint(lo, hi, spec.shape, generator=gen, dtype=torch.int64)


def weight_norm_gain(v: torch.Tensor, spec: TensorSpec, gen: torch.Generator) -> torch.Tensor:
    """`weight_g` for a given `weight_v`: ||v|| over all dims but 0 (torch's weight_norm dim=0), times a
    1 + 0.1 N(0, 1) gain, so the effective weight g v / ||v|| is v rescaled by about one per row."""
    norm = v.flatten(1).norm(dim=1).view(spec.shape)
    return (norm * (1.0 + GAIN_STD * torch.randn(spec.shape, generator=gen))).to(spec.dtype)


def pick_rule(key: str, spec: TensorSpec) -> Rule:
    """The rule for one (non-`weight_g`) tensor, from its key's last name and its shape."""
    name = key.rsplit(".", 1)[-1]
    if spec.dtype == torch.int64:
        if name == "num_batches_tracked":
            return batch_count
        raise ValueError(f"{key}: int64 tensor with no random rule; pass its computed value as a buffer")
    if not spec.dtype.is_floating_point:
        raise ValueError(f"{key}: unsupported dtype {spec.dtype}")
    if name in ("running_var", "var"):
        return positive_variance
    if name in ("running_mean", "mean"):
        return small_mean
    if key.endswith(("act.alpha", "act.beta")):
        return log_scale
    if name == "bias":
        return small_bias
    if len(spec.shape) == 1 and name in ("weight", "gamma"):
        return norm_gain
    if _EMBEDDING_KEY.search(key):
        return unit_normal
    if _IN_OUT_WEIGHT_KEY.search(key):
        return in_out_weight
    if name in ("weight", "weight_v") and len(spec.shape) >= 2:
        return fan_in_weight
    return unit_normal


# --- layouts and modules -------------------------------------------------------------------------------


def random_tensor(key: str, layout: Layout, seed: int, namespace: str) -> torch.Tensor:
    """The random value of `layout[key]`; `weight_g` is derived from its `weight_v` partner in `layout`."""
    spec = layout[key]
    gen = tensor_generator(seed, namespace, key)
    if key.endswith("weight_g"):
        v_key = key[: -len("weight_g")] + "weight_v"
        if v_key not in layout:
            raise ValueError(f"{key}: weight-norm gain without its {v_key}")
        v = random_tensor(v_key, layout, seed, namespace)
        return weight_norm_gain(v, spec, gen)
    return pick_rule(key, spec)(spec, gen)


def iter_random_tensors(
    layout: Layout, seed: int, namespace: str, buffers: Mapping[str, torch.Tensor] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) in layout order: the given buffer values as they are, random values for the rest."""
    buffers = buffers or {}
    unknown = set(buffers) - set(layout)
    if unknown:
        raise KeyError(f"buffers not in the layout: {sorted(unknown)[:5]}")
    for key, spec in layout.items():
        if key in buffers:
            value = buffers[key]
            if tuple(value.shape) != spec.shape or value.dtype != spec.dtype:
                raise ValueError(f"{key}: buffer is {value.dtype}{list(value.shape)}, layout says "
                                 f"{spec.dtype}{list(spec.shape)}")
            yield key, value
        else:
            yield key, random_tensor(key, layout, seed, namespace)


def random_state_dict(
    layout: Layout, seed: int, namespace: str, buffers: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """A full flat state dict for `layout`; `namespace` (e.g. the file name) separates equal keys."""
    return dict(iter_random_tensors(layout, seed, namespace, buffers))


@torch.no_grad()
def randomize_module_(module: nn.Module, seed: int, namespace: str) -> nn.Module:
    """Overwrite every parameter of `module` in place with the random rules; buffers are kept."""
    params = dict(module.named_parameters())
    layout = {k: TensorSpec(tuple(p.shape), p.dtype) for k, p in params.items()}
    for key, value in iter_random_tensors(layout, seed, namespace):
        params[key].copy_(value)
    return module
