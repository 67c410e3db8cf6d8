"""UnifiedVoice, IndexTTS2's autoregressive semantic-code generator, written for export.

Follows upstream `indextts/gpt/model_v2.py` (UnifiedVoice) and HF GPT-2 (the body upstream builds), see
architecture.md §2.1. Attribute names equal the `gpt.pth` keys, so the file loads without renaming.

What differs from upstream's code, not its numerics:
* the GPT-2 body takes an explicit per-layer KV cache (flat tensors) instead of HF cache objects, so one
  graph serves the prefill, the single-token steps and the second "latent" pass;
* upstream's `wpe` returns zeros and its `wte` is deleted, so the body has neither: positions come from
  the two learned tables (text / mel), added by the caller;
* the conditioning encoders run unmasked (upstream passes the feature width 1024 as the length, quirk 3).

IndexTTS-2.5 runs the same class with `spk_cond_mode="campplus"` (indextts25.md §3): no speaker Conformer,
Perceiver or speed_emb; `spk_emb_proj` projects the CAMPPlus style to one prefix row, followed by two zero
rows, and `lang_embedding[lang_id]` is added to every text position. `cfg.campplus` selects that layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GPTConfig
from .gqa import shared_kv_attention
from .perceiver import emotion_conditioner, speaker_conditioner


class Conv1D(nn.Module):
    """HF GPT-2's linear layer: weight stored as (in, out), i.e. transposed w.r.t. nn.Linear."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)  # HF init; the checkpoint overwrites it
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight) + self.bias


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = Conv1D(d, 3 * d)
        self.c_proj = Conv1D(d, d)

    def forward(self, x, past_k, past_v):
        # x: (B, S, C); past_k/past_v: (B, nh, P, hs)
        B, S, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        k = k.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        k = torch.cat([past_k, k], dim=2)  # (B, nh, P+S, hs)
        v = torch.cat([past_v, v], dim=2)  # (B, nh, P+S, hs)
        # written out rather than F.scaled_dot_product_attention: its ONNX form scales a transposed copy of
        # the whole cache every step, which ONNX Runtime cannot fold into the MatMul (~15 % of a CPU step);
        # q @ k^T * scale becomes one FusedMatMul. 1 / sqrt(hs) is exact for the power-of-two head sizes.
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, S, P+S)
        att = torch.softmax(att + causal_mask(S, k.shape[2], x.dtype), dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(B, S, C)  # (B, S, C)
        return self.c_proj(y), k, v

    def shared(self, x, k_cache, v_cache, seqlens_k, total_len):
        """The same attention over shared max-length buffers (modules/gqa.py): x (B, S, C); caches
        (B, nh, L, hs) with the new rows written at seqlens_k + 1 - S .. seqlens_k."""
        C = x.shape[2]
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, S, C) each: GQA takes them unsplit by head
        y, k_cache, v_cache = shared_kv_attention(q, k, v, k_cache, v_cache, seqlens_k, total_len, self.n_head,
                                                    self.n_head)
        return self.c_proj(y), k_cache, v_cache


def causal_mask(n_query: int, n_key: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (S, P+S): query i (absolute position P+i) sees keys 0..P+i.

    Additive rather than boolean so that no row can turn into NaN (ort-notes §2.3)."""
    past = n_key - n_query
    q_pos = torch.arange(n_query).unsqueeze(1) + past  # (S, 1)
    k_pos = torch.arange(n_key).unsqueeze(0)  # (1, P+S)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype)
    return torch.where(k_pos <= q_pos, torch.zeros((), dtype=dtype), blocked)


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = Conv1D(d, 4 * d)
        self.c_proj = Conv1D(4 * d, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # HF "gelu_new"


class Block(nn.Module):
    """Pre-LN GPT-2 block."""

    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = CausalSelfAttention(d, n_head)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = MLP(d)

    def forward(self, x, past_k, past_v):
        a, k, v = self.attn(self.ln_1(x), past_k, past_v)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, k, v

    def shared(self, x, k_cache, v_cache, seqlens_k, total_len):
        a, k_cache, v_cache = self.attn.shared(self.ln_1(x), k_cache, v_cache, seqlens_k, total_len)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, k_cache, v_cache


class GPT2Body(nn.Module):
    """HF GPT2Model without wte/wpe (upstream removes both): blocks `h.N`, then `ln_f`."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.h = nn.ModuleList([Block(cfg.model_dim, cfg.heads) for _ in range(cfg.layers)])
        self.ln_f = nn.LayerNorm(cfg.model_dim, eps=1e-5)

    def forward(self, x: torch.Tensor, past: list[torch.Tensor]):
        """x: (B, S, C) input embeddings; past: [k0, v0, k1, v1, ...] each (B, nh, P, hs).

        Returns ln_f(hidden) (B, S, C) and the presents [k0', v0', ...] each (B, nh, P+S, hs)."""
        presents = []
        for i, block in enumerate(self.h):
            x, k, v = block(x, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return self.ln_f(x), presents

    def shared(self, x: torch.Tensor, caches: list[torch.Tensor], seqlens_k: torch.Tensor,
               total_len: torch.Tensor):
        """`forward` over shared buffers: caches [k0, v0, ...] each (B, nh, L, hs) -> ln_f(hidden), caches'."""
        out = []
        for i, block in enumerate(self.h):
            x, k, v = block.shared(x, caches[2 * i], caches[2 * i + 1], seqlens_k, total_len)
            out += [k, v]
        return self.ln_f(x), out


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, n_pos: int, d: int):
        super().__init__()
        self.emb = nn.Embedding(n_pos, d)


class UnifiedVoice(nn.Module):
    """The IndexTTS2 GPT: conditioning encoders, embeddings, GPT-2 body and heads (architecture §2.1)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.model_dim
        if cfg.campplus:
            # 2.5: the CAMPPlus style (B, style_dim) -> one speaker row (B, d); the language row per text
            self.spk_emb_proj = nn.Linear(cfg.style_dim, d)
            self.lang_embedding = nn.Embedding(cfg.lang_embedding_rows, d)
        else:
            # 2.0: Conformer + Perceiver over the semantic features -> (B, condition_num_latent, d)
            self.conditioning_encoder, self.perceiver_encoder = speaker_conditioner(cfg)
        # emotion path: Conformer + one-latent Perceiver at the semantic width, then two linears -> (B, d)
        self.emo_conditioning_encoder, self.emo_perceiver_encoder = emotion_conditioner(cfg)
        self.emovec_layer = nn.Linear(cfg.semantic_dim, d)
        self.emo_layer = nn.Linear(d, d)
        if not cfg.campplus:
            self.speed_emb = nn.Embedding(2, d)
        self.text_embedding = nn.Embedding(cfg.number_text_tokens + 1, d)
        self.mel_embedding = nn.Embedding(cfg.number_mel_codes, d)
        self.text_pos_embedding = LearnedPositionEmbeddings(cfg.text_positions, d)
        self.mel_pos_embedding = LearnedPositionEmbeddings(cfg.mel_positions, d)
        self.gpt = GPT2Body(cfg)
        self.final_norm = nn.LayerNorm(d, eps=1e-5)
        # text_head is unused at inference; it is kept so that gpt.pth loads strictly as it is.
        self.text_head = nn.Linear(d, cfg.number_text_tokens + 1)
        self.mel_head = nn.Linear(d, cfg.number_mel_codes)

    # --- conditioning -------------------------------------------------------------------------

    def speaker_latent(self, semantic: torch.Tensor) -> torch.Tensor:
        """(B, T, semantic_dim) normalised w2v-BERT features -> (B, condition_num_latent, d). 2.0 only."""
        self._require(False, "speaker_latent")
        return self.perceiver_encoder(self.conditioning_encoder(semantic))

    def emotion_vector(self, semantic: torch.Tensor) -> torch.Tensor:
        """Upstream `get_emovec`: (B, T, semantic_dim) -> (B, d)."""
        emo = self.emo_perceiver_encoder(self.emo_conditioning_encoder(semantic)).squeeze(1)  # (B, semantic_dim)
        return self.emo_layer(self.emovec_layer(emo))

    @staticmethod
    def merge_emotion(base: torch.Tensor, emotion: torch.Tensor, alpha: float) -> torch.Tensor:
        """Upstream `merge_emovec`: both vectors come from `emotion_vector`."""
        return base + alpha * (emotion - base)

    def conditioning_prefix(self, speaker_latent: torch.Tensor, emovec: torch.Tensor) -> torch.Tensor:
        """The 34 prefix rows: speaker latents + emovec, then speed rows 1 and 0 (quirk 4). -> (B, 34, d)"""
        self._require(False, "conditioning_prefix")
        B = speaker_latent.shape[0]
        speed = self.speed_emb.weight[[1, 0]].unsqueeze(0).expand(B, 2, -1)  # (B, 2, d)
        return torch.cat([speaker_latent + emovec.unsqueeze(1), speed], dim=1)

    def campplus_prefix(self, style: torch.Tensor, emovec: torch.Tensor) -> torch.Tensor:
        """2.5's 3 prefix rows: [spk_emb_proj(style) + emovec, 0, 0] (upstream inference_speech).

        style : (B, style_dim) CAMPPlus style; emovec : (B, d) -> (B, 3, d)"""
        self._require(True, "campplus_prefix")
        speaker = self.spk_emb_proj(style) + emovec  # (B, d)
        return torch.cat([speaker.unsqueeze(1), speaker.new_zeros(speaker.shape[0], 2, speaker.shape[1])], dim=1)

    def _require(self, campplus: bool, what: str) -> None:
        if self.cfg.campplus != campplus:
            family = "IndexTTS-2.5 (campplus)" if campplus else "IndexTTS-2 (conformer_perceiver)"
            raise TypeError(f"UnifiedVoice.{what} exists only in the {family} layout")

    # --- embeddings ------------------------------------------------------------------------------

    def text_inputs(self, text_ids: torch.Tensor, lang_id: int | None = None) -> torch.Tensor:
        """(B, L) ids already wrapped in start/stop text tokens -> embeddings with positions 0..L-1, plus
        2.5's `lang_embedding[lang_id]` at every position (start and stop included) when lang_id is given."""
        pos = torch.arange(text_ids.shape[1])
        emb = self.text_embedding(text_ids) + self.text_pos_embedding.emb(pos)  # (B, L, d)
        if lang_id is not None:
            self._require(True, "text_inputs(lang_id=...)")
            emb = emb + self.lang_embedding.weight[lang_id]  # (d,) broadcast over (B, L)
        return emb

    def mel_inputs(self, codes: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, N) mel ids at the given mel positions (N,) -> (B, N, d)."""
        return self.mel_embedding(codes) + self.mel_pos_embedding.emb(positions)

    # --- body ----------------------------------------------------------------------------------

    def decode(self, inputs_embeds: torch.Tensor, past: list[torch.Tensor]):
        """One decoder call: -> (last-position mel logits (B, V), final-normed hidden (B, S, d), presents)."""
        h, presents = self.gpt(inputs_embeds, past)
        h = self.final_norm(h)  # upstream applies ln_f and then final_norm
        logits = self.mel_head(h[:, -1])  # (B, V)
        return logits, h, presents

    def decode_shared(self, inputs_embeds: torch.Tensor, mel_codes: torch.Tensor, mel_positions: torch.Tensor,
                      caches: list[torch.Tensor], seqlens_k: torch.Tensor, total_len: torch.Tensor):
        """The second-generation decoder call: host-built rows, then mel codes embedded in the graph.

        inputs_embeds (B, E, d): conditioning/text rows (E = 0 in decode steps); mel_codes, mel_positions
        (B, M) int64: codes and their mel positions, embedded as `mel_inputs` and appended; caches
        [k0, v0, ...] each (B, nh, L, hs), shared buffers; seqlens_k int32 (B,) = tokens per row after
        the call - 1; total_len int32 () = the largest seqlens_k + 1.
        -> (last-position mel logits (B, V), final-normed hidden (B, E + M, d), caches')."""
        mel = self.mel_embedding(mel_codes) + self.mel_pos_embedding.emb(mel_positions)  # (B, M, d)
        x = torch.cat([inputs_embeds, mel], dim=1)  # (B, E + M, d)
        h, caches = self.gpt.shared(x, caches, seqlens_k, total_len)
        h = self.final_norm(h)
        return self.mel_head(h[:, -1]), h, caches

    def empty_past(self, batch: int) -> list[torch.Tensor]:
        c = self.cfg
        shape = (batch, c.heads, 0, c.head_dim)
        return [torch.zeros(shape) for _ in range(2 * c.layers)]
