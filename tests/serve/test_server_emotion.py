"""Emotion from text through the speech server: OpenAI's `instructions` (and the `emotion_text` /
`use_emotion_text` fields) read by the bundle's emotion model; the audio is the library's for the same
call; requests the server cannot serve are 400s naming the field, and it stays up."""

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
from indextts2_onnx.runtime.serve.config import ServerConfig  # noqa: E402

from serving import serving, voice_wav  # noqa: E402  (tests/serve/serving.py)

FIXED = {"max_codes": 12, "min_codes": 12, "steps": 2, "seed": 5}  # a fixed length on random weights
TEXT, DESCRIPTION = "今天天气很好。", "有点难过，很疲惫"


@pytest.fixture(scope="module")
def tts(tiny_bundle) -> IndexTTS2:
    return IndexTTS2(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def config(tiny_bundle, tmp_path_factory) -> ServerConfig:
    return ServerConfig(bundle=str(tiny_bundle), voices=str(tmp_path_factory.mktemp("voices")), workers=2,
                        max_queue=4, api_key="")


def speech(client, **fields):
    body = {"model": "indextts2", "input": TEXT, "voice": "bob", "response_format": "wav", **FIXED, **fields}
    return client.post("/v1/audio/speech", json=body)


def samples(r) -> np.ndarray:
    return sf.read(io.BytesIO(r.content), dtype="int16")[0]


def test_instructions_and_emotion_text_give_the_librarys_audio(config, tts):
    with serving(config, tts) as client:
        r = client.post("/v1/audio/voices", files={"audio": ("bob.wav", voice_wav(), "audio/wav")},
                        data={"name": "bob"})
        assert r.status_code == 201, r.text
        speaker = client.app.state.voices.get("bob")
        described = to_int16(tts.synthesize(TEXT, speaker, SynthesisOptions(
            use_emotion_text=True, emotion_text=DESCRIPTION, **FIXED)).audio)
        r = speech(client, instructions=DESCRIPTION)
        assert r.status_code == 200, r.text
        assert np.array_equal(samples(r), described)
        for fields in ({"use_emotion_text": True, "emotion_text": DESCRIPTION}, {"emotion_text": DESCRIPTION}):
            r = speech(client, **fields)  # over HTTP, emotion_text alone means use it
            assert r.status_code == 200 and np.array_equal(samples(r), described), fields

        own = to_int16(tts.synthesize(TEXT, speaker, SynthesisOptions(use_emotion_text=True, **FIXED)).audio)
        r = speech(client, use_emotion_text=True)  # the input text itself
        assert r.status_code == 200 and np.array_equal(samples(r), own)
        plain = speech(client)  # the speaker's own emotion: another path (random weights answer calm 1.0)
        assert plain.status_code == 200 and not np.array_equal(samples(plain), described)

        for fields, param in [({"instructions": DESCRIPTION, "emotion_text": "sad"}, "instructions"),
                              ({"emotion_text": ""}, "emotion_text"),
                              ({"instructions": "  "}, "instructions")]:
            r = speech(client, **fields)
            assert r.status_code == 400, (fields, r.text)
            assert r.json()["error"]["param"] == param, (fields, r.json())
        assert client.get("/health").status_code == 200


def test_a_server_without_the_model_answers_400(config, tiny_bundle):
    unloaded = IndexTTS2(tiny_bundle, threads=1, emotion_text=False)
    with serving(replace(config, emotion_text=False), unloaded) as client:
        r = client.post("/v1/audio/voices", files={"audio": ("bob.wav", voice_wav(), "audio/wav")},
                        data={"name": "bob"})
        assert r.status_code == 201, r.text
        r = speech(client, instructions=DESCRIPTION)
        assert r.status_code == 400 and r.json()["error"]["param"] == "instructions"
        assert "--no-emotion-text" in r.json()["error"]["message"]
        r = speech(client, use_emotion_text=True)
        assert r.status_code == 400 and r.json()["error"]["param"] == "use_emotion_text"
        assert speech(client).status_code == 200
