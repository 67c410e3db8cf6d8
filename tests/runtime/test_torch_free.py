"""The runtime never imports torch, not even indirectly: features -> speaker -> codes -> mel -> waveform,
and emotion from text, run with torch and transformers made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_full_decode_without_torch(tiny_bundle):
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:  # any attempt to import torch (or transformers) fails loudly
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ImportError("torch imported by the runtime: " + name)
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from indextts2_onnx.runtime import IndexTTS2, Speaker
        tts = IndexTTS2({str(tiny_bundle)!r})
        rng = np.random.default_rng(0)
        mask = np.ones((1, 60), np.int64)
        spk = tts.speaker_from_features(rng.standard_normal((1, 60, 160)), mask, rng.standard_normal((1, 58, 160)),
                                        mask[:, :58], rng.standard_normal((120, 80)),
                                        rng.standard_normal((1, 80, 103)))
        spk.save({str(tiny_bundle.parent / "voice.npz")!r})
        spk = Speaker.load({str(tiny_bundle.parent / "voice.npz")!r})
        emovec = tts.emotion_vector(spk, vector=[0.5, 0, 0, 0, 0, 0, 0, 0])
        codes, latent = tts.generate_codes([5, 6, 7], spk, emovec, seed=0, max_codes=30)
        assert latent.shape == (1, len(codes), 64), latent.shape
        mel = tts.decode_mel(codes, latent, spk, steps=3, seed=0)
        wav = tts.vocode(mel)
        assert wav.shape == (256 * int(len(codes) * 1.72),) and np.abs(wav).max() <= 1
        emotion = tts.emotion_from_text("有点难过，很疲惫", max_new_tokens=5)  # the emotion model: tokenizers + ORT
        assert emotion.new_tokens == 5 and len(emotion.vector) == 8 and "tokenizers" in sys.modules
        assert "torch" not in sys.modules and "onnxruntime" in sys.modules
        print("codes", len(codes), "samples", wav.shape[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("codes ")
