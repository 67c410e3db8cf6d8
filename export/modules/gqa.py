"""Attention over a shared, max-length KV buffer, exported as ONNX Runtime's `GroupQueryAttention`.

The second-generation decoder graph keeps one K and one V buffer per layer, (B, kv_heads, max_len,
head_dim), that ONNX Runtime binds as both the past input and the present output, so a decode step appends in place
and allocates nothing (ort-notes §2.7, §3.2-3.4; onnxruntime-genai's `past_present_share_buffer`).

Row b holds T_b = seqlens_k[b] + 1 tokens after the call; the S new tokens go to positions P_b = T_b - S ..
T_b - 1, and query row s (absolute position P_b + s) attends to keys 0 .. P_b + s. Rows of a batch may have
different lengths (one decode step for several requests); a call with S > 1 (prefill, a chunk of the
latent pass) is made with one row, as ONNX Runtime requires without `query_seqlens`. The GPT has as many
key/value heads as query heads; the emotion model's Qwen3 decoder shares each key/value head among a group
of query heads (grouped-query attention, e.g. 8 for 16).

`shared_kv_attention` is a torch custom op: its eager body below is the reference the exported node is
checked against, and `TRANSLATION` maps it to the contrib op at export time (post-hoc fusion does not
recognise this GPT's attention, ort-notes §3.5). The eager body is written for clarity, not speed: it is
never traced.
"""

from __future__ import annotations

import math

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema

MS_DOMAIN = "com.microsoft"


@torch.library.custom_op("indextts2::shared_kv_attention", mutates_args=())
def shared_kv_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                        v_cache: torch.Tensor, seqlens_k: torch.Tensor, total_len: torch.Tensor,
                        heads: int, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (B, S, heads * head_dim); k, v (B, S, kv_heads * head_dim); k_cache, v_cache (B, kv_heads, L,
    head_dim); seqlens_k int32 (B,) = tokens after the call - 1; total_len int32 () = max over rows of
    seqlens_k + 1. Query head h reads key/value head h // (heads // kv_heads) (grouped-query attention;
    kv_heads == heads is plain multi-head attention).
    -> attention output (B, S, heads * head_dim) and the caches with the new rows written (copies: torch
    ops are pure)."""
    B, S, C = q.shape
    hd = C // heads
    group = heads // kv_heads
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    out = torch.zeros_like(q)
    for b in range(B):
        t = int(seqlens_k[b]) + 1  # tokens in row b after this call
        p = t - S  # tokens before it
        k_cache[b, :, p:t] = k[b].view(S, kv_heads, hd).transpose(0, 1)  # (kv_heads, S, hd)
        v_cache[b, :, p:t] = v[b].view(S, kv_heads, hd).transpose(0, 1)
        qb = q[b].view(S, heads, hd).transpose(0, 1)  # (heads, S, hd)
        keys = k_cache[b, :, :t].repeat_interleave(group, dim=0)  # (heads, t, hd)
        values = v_cache[b, :, :t].repeat_interleave(group, dim=0)  # (heads, t, hd)
        att = (qb @ keys.transpose(-1, -2)) * (1.0 / math.sqrt(hd))  # (heads, S, t)
        visible = torch.arange(t)[None, :] <= (torch.arange(S)[:, None] + p)  # (S, t) causal, offset by p
        att = att.masked_fill(~visible, float("-inf")).softmax(-1)
        out[b] = (att @ values).transpose(0, 1).reshape(S, C)
    return out, k_cache, v_cache


@shared_kv_attention.register_fake
def _shapes(q, k, v, k_cache, v_cache, seqlens_k, total_len, heads, kv_heads):
    return torch.empty_like(q), torch.empty_like(k_cache), torch.empty_like(v_cache)


def _register_schema() -> None:
    """onnxscript looks op schemas up in `onnx.defs`, which does not know ORT's contrib ops: declare the
    part of GroupQueryAttention this graph uses (once per process)."""
    if onnx.defs.has("GroupQueryAttention", MS_DOMAIN):
        return
    p = OpSchema.FormalParameter
    onnx.defs.register_schema(OpSchema(
        "GroupQueryAttention", MS_DOMAIN, 1,
        inputs=[p("query", "T"), p("key", "T"), p("value", "T"), p("past_key", "T"), p("past_value", "T"),
                p("seqlens_k", "M"), p("total_sequence_length", "M")],
        outputs=[p("output", "T"), p("present_key", "T"), p("present_value", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float types"),
                          ("M", ["tensor(int32)"], "lengths")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "query heads"),
                    OpSchema.Attribute("kv_num_heads", OpSchema.AttrType.INT, "key/value heads")],
    ))


def _to_onnx(q, k, v, k_cache, v_cache, seqlens_k, total_len, heads: int, kv_heads: int):
    ms = onnxscript.values.Opset(MS_DOMAIN, 1)
    return ms.GroupQueryAttention(q, k, v, k_cache, v_cache, seqlens_k, total_len, num_heads=heads,
                                  kv_num_heads=kv_heads, _outputs=3)


def translation_table() -> dict:
    """`torch.onnx.export(custom_translation_table=...)` for graphs that use `shared_kv_attention`."""
    _register_schema()
    return {torch.ops.indextts2.shared_kv_attention.default: _to_onnx}
