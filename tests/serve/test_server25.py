"""The speech server over an IndexTTS-2.5 bundle: `lang` and `duration_factor` request fields, the
server-wide default language, and the 400s that name them; the audio is the library's for the same call."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the server needs the [serve] extra")
pytest.importorskip("httpx", reason="the tests drive the server with httpx (the [test] extra)")

from indextts2_onnx.runtime import IndexTTS2, SynthesisOptions  # noqa: E402
from indextts2_onnx.runtime.audio import to_int16  # noqa: E402
from indextts2_onnx.runtime.s2mel import target_frames_25  # noqa: E402
from indextts2_onnx.runtime.serve.config import ServerConfig  # noqa: E402

from serving import serving, voice_wav  # noqa: E402  (tests/serve/serving.py)

FIXED = {"max_codes": 12, "min_codes": 12, "steps": 2, "seed": 3}  # a fixed length on random weights


@pytest.fixture(scope="module")
def tts25(tiny25_bundle) -> IndexTTS2:
    return IndexTTS2(tiny25_bundle, threads=1)


@pytest.fixture(scope="module")
def config25(tiny25_bundle, tmp_path_factory) -> ServerConfig:
    return ServerConfig(bundle=str(tiny25_bundle), voices=str(tmp_path_factory.mktemp("voices25")), workers=2,
                        max_queue=4, api_key="")


def with_voice(client):
    r = client.post("/v1/audio/voices", files={"audio": ("bob.wav", voice_wav(), "audio/wav")}, data={"name": "bob"})
    assert r.status_code == 201, r.text
    return client


def speech(client, text: str, **fields):
    body = {"model": "indextts2", "input": text, "voice": "bob", "response_format": "wav", **FIXED, **fields}
    return client.post("/v1/audio/speech", json=body)


def samples(r) -> np.ndarray:
    audio, sr = sf.read(io.BytesIO(r.content), dtype="int16")
    assert sr == 22050
    return audio


def test_lang_and_duration_factor_fields_give_the_librarys_audio(config25, tts25):
    with serving(config25, tts25) as client:
        with_voice(client)
        r = speech(client, "今日は良い天気です。", lang="ja")
        assert r.status_code == 200, r.text
        speaker = client.app.state.voices.get("bob")
        want = tts25.synthesize("今日は良い天気です。", speaker, SynthesisOptions(lang="ja", **FIXED)).audio
        assert np.array_equal(samples(r), to_int16(want))
        assert samples(r).shape[0] == target_frames_25(12) * 256

        slow = speech(client, "Hello there.", lang="en", duration_factor=1.5)
        assert slow.status_code == 200, slow.text
        assert samples(slow).shape[0] == target_frames_25(12, 1.5) * 256


def test_requests_without_a_language_are_a_400_naming_lang_unless_the_server_has_one(config25, tts25):
    with serving(config25, tts25) as client:
        with_voice(client)
        r = speech(client, "Hello there.")
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "lang" and "needs the text's language" in r.json()["error"]["message"]
        r = speech(client, "Bonjour.", lang="fr")
        assert r.status_code == 400 and r.json()["error"]["param"] == "lang"
        r = speech(client, "Hello.", lang="en", duration_factor=5)
        assert r.status_code == 400 and r.json()["error"]["param"] == "duration_factor"
        assert client.get("/health").status_code == 200  # bad requests leave it up
    with serving(replace(config25, lang="en"), tts25) as client:
        with_voice(client)
        r = speech(client, "Hello there.")
        assert r.status_code == 200, r.text
        assert samples(r).shape[0] == target_frames_25(12) * 256


def test_a_2_0_server_refuses_a_duration_factor_and_other_languages(tiny_bundle, tmp_path):
    tts = IndexTTS2(tiny_bundle, threads=1)
    config = ServerConfig(bundle=str(tiny_bundle), voices=str(tmp_path / "voices"), workers=1, api_key="")
    with serving(config, tts) as client:
        with_voice(client)
        r = speech(client, "Hello there.", duration_factor=1.5)
        assert r.status_code == 400 and r.json()["error"]["param"] == "duration_factor"
        r = speech(client, "今日は。", lang="ja")
        assert r.status_code == 400 and r.json()["error"]["param"] == "lang"
        assert speech(client, "Hello there.", lang="en").status_code == 200
