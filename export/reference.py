"""Torch reference for GPT code generation, written the way upstream computes it.

Used by tests and `verify` as the ground truth for the runtime. It deliberately runs WITHOUT a KV cache
(every step re-runs the whole sequence), so it also checks the runtime's cache handling, and it builds the
inputs straight from upstream's rules (architecture §2.1.2, §2.1.5-2.1.6, upstream-quirks 1, 2, 4).
"""

from __future__ import annotations

import torch

from .modules.gpt import UnifiedVoice


def decode_prefix(model: UnifiedVoice, speaker_latent: torch.Tensor, emovec: torch.Tensor,
                  text_ids: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Prefill embeddings (1, 34+L+3, d) and the fake ids upstream passes to `generate`.

    Ids equal to the start/stop text tokens are dropped from the text first, as upstream's
    `prepare_gpt_inputs` does; the fake ids are all 1 but the last (the start mel token)."""
    c = model.cfg
    ids = [t for t in text_ids if t not in (c.start_text_token, c.stop_text_token)]
    text = torch.tensor([[c.start_text_token, *ids, c.stop_text_token]])
    start = model.mel_inputs(torch.tensor([[c.start_mel_token]]), torch.tensor([0]))  # mel position 0
    emb = torch.cat([model.conditioning_prefix(speaker_latent, emovec), model.text_inputs(text), start], dim=1)
    fake_ids = [1] * (emb.shape[1] - 1) + [c.start_mel_token]
    return emb, fake_ids


def campplus_decode_prefix(model: UnifiedVoice, style: torch.Tensor, emovec: torch.Tensor, text_ids: list[int],
                           lang_id: int) -> tuple[torch.Tensor, list[int]]:
    """IndexTTS-2.5's prefill (1, 3+L+3, d) and fake ids: [spk_emb_proj(style) + emovec, 0, 0], then the
    text (ids 0 and 1 dropped, as upstream's `prepare_gpt_inputs` drops them: `!` and `"` in 2.5's
    vocabulary) with the language row added to every text position, then the start mel token. Upstream's
    masked left-pad rows (one per dropped id) are left out: masked, they change no hidden state."""
    c = model.cfg
    ids = [t for t in text_ids if t not in (c.start_text_token, c.stop_text_token)]
    text = torch.tensor([[c.start_text_token, *ids, c.stop_text_token]])
    start = model.mel_inputs(torch.tensor([[c.start_mel_token]]), torch.tensor([0]))  # mel position 0
    emb = torch.cat([model.campplus_prefix(style, emovec), model.text_inputs(text, lang_id), start], dim=1)
    fake_ids = [1] * (emb.shape[1] - 1) + [c.start_mel_token]
    return emb, fake_ids


def repetition_penalty(scores: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """HF RepetitionPenaltyLogitsProcessor on one row."""
    out = scores.clone()
    idx = torch.tensor(sorted(set(seen)))
    s = out[idx]
    out[idx] = torch.where(s < 0, s * penalty, s / penalty)
    return out


@torch.no_grad()
def greedy_codes(model: UnifiedVoice, speaker_latent: torch.Tensor, emovec: torch.Tensor,
                 text_ids: list[int], max_codes: int, penalty: float = 10.0,
                 return_logits: bool = False):
    """Upstream greedy generation (`do_sample=False, num_beams=1`): penalty on raw logits, then argmax.

    Returns the generated ids (ending with the stop token if it was produced) and, optionally, the raw
    last-position logits of every step (for step-by-step comparison)."""
    emb, seen = decode_prefix(model, speaker_latent, emovec, text_ids)
    return greedy_from(model, emb, seen, max_codes, penalty, return_logits)


@torch.no_grad()
def greedy_from(model: UnifiedVoice, emb: torch.Tensor, seen: list[int], max_codes: int, penalty: float = 10.0,
                return_logits: bool = False):
    """`greedy_codes` from a prefill `emb` and its fake ids `seen` (decode_prefix or campplus_decode_prefix)."""
    c = model.cfg
    seen = list(seen)
    codes, step_logits = [], []
    for k in range(max_codes):
        logits = model.decode(emb, model.empty_past(1))[0][0]  # (V,)
        step_logits.append(logits)
        tok = int(torch.argmax(repetition_penalty(logits, seen, penalty)))
        codes.append(tok)
        seen.append(tok)
        if tok == c.stop_mel_token:
            break
        # the (k+1)-th generated code sits at mel position k+2: position 1 is never used (quirk 2)
        nxt = model.mel_inputs(torch.tensor([[tok]]), torch.tensor([k + 2]))
        emb = torch.cat([emb, nxt], dim=1)
    return (codes, torch.stack(step_logits)) if return_logits else codes


@torch.no_grad()
def latent(model: UnifiedVoice, speaker_latent: torch.Tensor, emovec: torch.Tensor,
           text_ids: list[int], codes: list[int]) -> torch.Tensor:
    """Upstream's second pass: final-normed hidden states that predicted each code -> (1, N, d).

    Text keeps any 0/1 ids here and mel positions are contiguous 0..N+1 (unlike the decode loop)."""
    c = model.cfg
    text = torch.tensor([[c.start_text_token, *text_ids, c.stop_text_token]])
    mel = torch.tensor([[c.start_mel_token, *codes, c.stop_mel_token]])
    emb = torch.cat([
        model.conditioning_prefix(speaker_latent, emovec),
        model.text_inputs(text),
        model.mel_inputs(mel, torch.arange(mel.shape[1])),
    ], dim=1)
    h = model.decode(emb, model.empty_past(1))[1]
    return h[:, -mel.shape[1]:-2]
