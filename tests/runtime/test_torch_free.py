"""The runtime never imports torch, not even indirectly: a full decode runs with torch made unimportable."""

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
        spk = Speaker(semantic=rng.standard_normal((1, 40, 32)), emotion_semantic=rng.standard_normal((1, 40, 32)),
                      style=rng.standard_normal((1, 48)), ref_mel=np.zeros((1, 80, 5)),
                      prompt_condition=np.zeros((1, 5, 32)))
        emovec = tts.emotion_vector(spk, vector=[0.5, 0, 0, 0, 0, 0, 0, 0])
        codes, latent = tts.generate_codes([5, 6, 7], spk, emovec, seed=0, max_codes=30)
        assert latent.shape == (1, len(codes), 64), latent.shape
        assert "torch" not in sys.modules and "onnxruntime" in sys.modules
        print("codes", len(codes))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("codes ")
