"""The voice prompt's neural half: front-end features -> the five `Speaker` arrays (upstream infer_v2).

    semantic          = w2v-BERT layer 17, normalised, of the speaker path's SeamlessM4T features
    S_ref             = codec quantize(semantic)                    (2.0: quantized, out-projected features)
                      = semantic                                    (2.5: the un-quantised features)
    emotion_semantic  = the same encoder on the emotion path's features
    style             = CAMPPlus(fbank - its time mean)
    prompt_condition  = length_regulator(S_ref, ref_mel frames)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import CAMPPLUS_MIN_FRAMES
from .errors import InputError, require_finite
from .sessions import Graph
from .speaker import Speaker


@dataclass
class PromptEncoder:
    semantic_encoder: Graph
    codec: Graph | None  # 2.0's semantic_codec (quantize); None for 2.5, which conditions on the features
    campplus: Graph
    regulator: Graph

    def semantic(self, features: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
        """(1, T, 160) stacked fbank features and (1, T) mask -> (1, T, D) normalised semantic features."""
        features = np.asarray(features, dtype=np.float32)
        mask = np.asarray(mask).astype(np.int64)
        if features.ndim != 3 or features.shape[0] != 1 or mask.shape != features.shape[:2]:
            raise InputError(f"{name}: expected features (1, T, 160) and mask (1, T), got {features.shape} and {mask.shape}")
        if features.shape[1] == 0 or not mask.any():
            raise InputError(f"{name}: no valid frames", "the audio is too short or silent")
        return self.semantic_encoder.run({"input_features": features, "attention_mask": mask})[0]

    def style(self, fbank: np.ndarray) -> np.ndarray:
        """Kaldi fbank (T, 80) -> CAMPPlus style (1, style_dim); upstream subtracts the time mean first."""
        fbank = np.asarray(fbank, dtype=np.float32).reshape(-1, 80)
        if fbank.shape[0] < CAMPPLUS_MIN_FRAMES:
            raise InputError(f"fbank: {fbank.shape[0]} frames, CAMPPlus needs at least {CAMPPLUS_MIN_FRAMES}",
                             "use a longer prompt")
        fbank = fbank - fbank.mean(axis=0, keepdims=True)
        return self.campplus.run({"fbank": fbank[None]})[0]

    def speaker(self, features: np.ndarray, mask: np.ndarray, emo_features: np.ndarray, emo_mask: np.ndarray,
                fbank: np.ndarray, ref_mel: np.ndarray, stage: str = "speaker preparation") -> Speaker:
        """Front-end features -> Speaker; a graph output holding NaN / inf is a GenerationError naming `stage`."""
        semantic = require_finite(stage, self.semantic(features, mask, "speaker features"))
        s_ref = semantic if self.codec is None else self.codec.run({"semantic": semantic})[1]
        ref_mel = np.asarray(ref_mel, dtype=np.float32)
        if ref_mel.ndim != 3 or ref_mel.shape[0] != 1 or ref_mel.shape[2] == 0:
            raise InputError(f"ref_mel: expected (1, n_mels, frames) with frames > 0, got {ref_mel.shape}")
        condition = self.regulator.run({"content": s_ref, "length": np.array(ref_mel.shape[2], dtype=np.int64)})[0]
        emotion_semantic = self.semantic(emo_features, emo_mask, "emotion features")
        style = self.style(fbank)
        for array in (s_ref, condition, emotion_semantic, style):
            require_finite(stage, array)
        return Speaker(semantic=semantic, emotion_semantic=emotion_semantic, style=style, ref_mel=ref_mel,
                       prompt_condition=condition)
