"""The speech server, started for real (uvicorn on a loopback port) over the tiny bundle: every endpoint,
both streaming forms, voices, admission (429), auth, the bad-request catalogue, disconnects, and the
audio it returns against the library's own calls with the same seed."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the server needs the [serve] extra")
pytest.importorskip("httpx", reason="the tests drive the server with httpx (the [test] extra)")

from indextts2_onnx.runtime import IndexTTS2, SynthesisOptions  # noqa: E402
from indextts2_onnx.runtime.audio import to_int16  # noqa: E402
from indextts2_onnx.runtime.serve.config import API_KEY_ENV, ServerConfig  # noqa: E402
from indextts2_onnx.runtime.serve.encoding import FORMATS  # noqa: E402

from serving import metric, serving, voice_wav  # noqa: E402  (tests/serve/serving.py)

TEXT = "Hello there. This is the server speaking."
SMALL = {"max_codes": 30, "steps": 2}  # random weights rarely stop: bound every request's length


@pytest.fixture(scope="module")
def tts(tiny_bundle) -> IndexTTS2:
    """One IndexTTS2 shared by this module's servers (loading is the slow part; every server builds its
    own app, engine and metrics over it)."""
    return IndexTTS2(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def base_config(tiny_bundle, tmp_path_factory) -> ServerConfig:
    return ServerConfig(bundle=str(tiny_bundle), voices=str(tmp_path_factory.mktemp("voices")), workers=3,
                        max_queue=4, api_key="")


@pytest.fixture(scope="module")
def server(base_config, tts):
    with serving(base_config, tts) as client:
        r = client.post("/v1/audio/voices", files={"audio": ("alice.wav", voice_wav(), "audio/wav")},
                        data={"name": "alice"})
        assert r.status_code == 201, r.text
        yield client


def speech(client, **fields):
    body = {"model": "indextts2", "input": TEXT, "voice": "alice", "response_format": "wav", "seed": 7,
            **SMALL, **fields}
    return client.post("/v1/audio/speech", json=body)


def reference(tts, server, chunked: bool, seed: int = 7) -> np.ndarray:
    """What the library gives for the same call: int16 samples, as the server writes them."""
    speaker = server.app.state.voices.get("alice")
    options = SynthesisOptions(seed=seed, chunked=chunked, **SMALL)
    audio = np.concatenate([c.audio for c in tts.stream(TEXT, speaker, options)])
    return to_int16(audio)


def wav_samples(data: bytes) -> np.ndarray:
    audio, sr = sf.read(io.BytesIO(data), dtype="int16")
    assert sr == 22050
    return audio


# --- endpoints ------------------------------------------------------------------------------------


def test_health_ready_models_metrics(server):
    assert server.get("/health").json() == {"status": "ok"}
    assert server.get("/ready").json() == {"status": "ready"}
    assert [m["id"] for m in server.get("/v1/models").json()["data"]] == ["indextts2"]
    text = server.get("/metrics").text
    for name in ("indextts2_requests_total", "indextts2_queue_depth", "indextts2_in_flight", "indextts2_ttfa_seconds",
                 "indextts2_rtf", "indextts2_stage_seconds", "indextts2_codes_generated_total",
                 "process_resident_memory_bytes"):
        assert name in text, name


def test_whole_response_is_the_librarys_audio(server, tts):
    r = speech(server)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert float(r.headers["X-Audio-Seconds"]) > 0
    assert np.array_equal(wav_samples(r.content), reference(tts, server, chunked=False))


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "wav"])
def test_every_format(server, fmt):
    r = speech(server, response_format=fmt)
    assert r.status_code == 200, r.text
    expected = wav_samples(speech(server).content).size
    if fmt == "pcm":
        assert len(r.content) == 2 * expected
    else:
        audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
        seconds = audio.shape[0] / sr
        assert abs(seconds - expected / 22050) < 0.1, (fmt, seconds)  # codec padding at most


def test_streamed_audio_arrives_in_pieces_and_is_the_librarys_stream(server, tts):
    arrivals, parts = [], []
    with server.stream("POST", "/v1/audio/speech", json={"input": TEXT, "voice": "alice", "response_format": "pcm",
                                                         "seed": 7, "stream_format": "audio", **SMALL}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "audio/pcm"
        for piece in r.iter_raw():
            arrivals.append(time.monotonic())
            parts.append(piece)
    assert len(parts) >= 2  # the 30 codes are two chunks (25 + 5): the first came before the end
    assert arrivals[0] < arrivals[-1]
    audio = np.frombuffer(b"".join(parts), "<i2")
    assert np.array_equal(audio, reference(tts, server, chunked=True))


def test_streamed_wav_has_an_open_ended_header(server, tts):
    with server.stream("POST", "/v1/audio/speech", json={"input": TEXT, "voice": "alice", "response_format": "wav",
                                                         "seed": 7, "stream_format": "audio", **SMALL}) as r:
        data = b"".join(r.iter_raw())
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff" and data[40:44] == b"\xff\xff\xff\xff"
    assert np.array_equal(np.frombuffer(data[44:], "<i2"), reference(tts, server, chunked=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_streaming_forms_for_every_format(server, fmt):
    """Every format streams as raw bytes and as SSE, and both carry the same bytes."""
    body = {"input": TEXT, "voice": "alice", "response_format": fmt, "seed": 7, **SMALL}
    with server.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "audio"}) as r:
        assert r.status_code == 200 and int(r.headers["X-Sample-Rate"]) in (22050, 24000)
        raw = b"".join(r.iter_raw())
    with server.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "sse"}) as r:
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    sse = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    if fmt == "opus":  # each Ogg stream has a random serial number: compare what they decode to
        assert np.array_equal(sf.read(io.BytesIO(sse))[0], sf.read(io.BytesIO(raw))[0])
    else:
        assert sse == raw
    seconds = events[-1]["audio_seconds"]
    if fmt in ("wav", "pcm"):
        samples = (len(raw) - (44 if fmt == "wav" else 0)) / 2
        assert abs(samples - seconds * 22050) <= 2  # audio_seconds is rounded to 0.1 ms
    elif fmt in ("mp3", "opus"):  # decodable; codec delay and padding aside, the same length
        audio, sr = sf.read(io.BytesIO(raw), dtype="float32")
        assert abs(audio.shape[0] / sr - seconds) < 0.15, (fmt, audio.shape[0] / sr, seconds)
    else:  # a streamed FLAC's header cannot know the length: starts as FLAC, holds compressed audio
        assert raw[:4] == b"fLaC" and len(raw) > 1000


def test_sse_deltas_then_done_with_usage(server):
    with server.stream("POST", "/v1/audio/speech", json={"input": TEXT, "voice": "alice", "response_format": "pcm",
                                                         "seed": 7, "stream_format": "sse", **SMALL}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"} and len(kinds) >= 3
    done = events[-1]
    assert 0 < done["usage"]["output_tokens"] <= SMALL["max_codes"]
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
    assert done["usage"]["input_tokens"] > 0 and done["ttfa_s"] > 0 and done["rtf"] > 0
    sse_audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    with server.stream("POST", "/v1/audio/speech", json={"input": TEXT, "voice": "alice", "response_format": "pcm",
                                                         "seed": 7, "stream_format": "audio", **SMALL}) as r:
        assert sse_audio == b"".join(r.iter_raw())
    assert abs(len(sse_audio) / 2 / 22050 - done["audio_seconds"]) < 1e-3


def test_concurrent_requests_give_the_sequential_audio(server):
    seeds = [11, 12, 13]
    alone = {s: speech(server, seed=s).content for s in seeds}
    together: dict[int, bytes] = {}
    start = threading.Barrier(len(seeds))

    def one(seed):
        start.wait()
        together[seed] = speech(server, seed=seed).content

    threads = [threading.Thread(target=one, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in seeds:
        assert together[s] == alone[s], s
    assert len({alone[s] for s in seeds}) == 3  # the seeds matter: not one audio for all


def test_emotion_options(server):
    plain = speech(server).content
    vector = speech(server, emotion_vector=[0, 0, 0.8, 0, 0, 0, 0, 0], emotion_alpha=0.9)
    assert vector.status_code == 200 and vector.content != plain
    by_voice = speech(server, emotion_voice="alice", emotion_alpha=0.5)
    assert by_voice.status_code == 200 and by_voice.content != plain


# --- voices ---------------------------------------------------------------------------------------


def test_voice_upload_list_delete(server, base_config):
    from pathlib import Path

    r = server.post("/v1/audio/voices", files={"audio": ("b.wav", voice_wav(3.0), "audio/wav")}, data={"name": "Bob Smith"})
    assert r.status_code == 201 and r.json() == {"id": "Bob-Smith", "name": "Bob Smith"}
    again = server.post("/v1/audio/voices", files={"audio": ("b.wav", voice_wav(3.0), "audio/wav")},
                        data={"name": "Bob Smith"})
    assert again.json()["id"] == "Bob-Smith-2"
    listed = {v["id"]: v for v in server.get("/v1/audio/voices").json()["voices"]}
    assert listed["Bob-Smith"]["name"] == "Bob Smith" and abs(listed["Bob-Smith"]["seconds"] - 3.0) < 0.01
    assert speech(server, voice={"id": "Bob-Smith"}).status_code == 200  # OpenAI's {"id": ...} form
    for vid in ("Bob-Smith", "Bob-Smith-2"):
        assert server.delete(f"/v1/audio/voices/{vid}").json()["deleted"] is True
    assert server.delete("/v1/audio/voices/Bob-Smith").status_code == 404
    assert not list(Path(base_config.voices).glob("Bob*"))


def test_bad_uploads_leave_no_voice(server, base_config):
    from pathlib import Path

    before = sorted(p.name for p in Path(base_config.voices).iterdir())
    cases = [
        ({"audio": ("x.wav", b"not audio at all", "audio/wav")}, {"name": "junk"}, 400, "audio"),
        ({"audio": ("s.wav", _silence(), "audio/wav")}, {"name": "quiet"}, 400, "audio"),
        ({"audio": ("v.wav", voice_wav(), "audio/wav")}, {"name": "  "}, 400, "name"),
        ({"audio": ("v.wav", voice_wav(), "audio/wav")}, {}, 400, "name"),
        ({}, {"name": "nofile"}, 400, "audio"),
    ]
    for files, data, status, param in cases:
        r = server.post("/v1/audio/voices", files=files or None, data=data)
        assert r.status_code == status, (data, r.text)
        assert r.json()["error"]["param"] == param, r.text
    assert sorted(p.name for p in Path(base_config.voices).iterdir()) == before
    assert server.get("/health").status_code == 200


def _silence() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(22050 * 2, np.float32), 22050, format="WAV")
    return buf.getvalue()


def test_upload_limits(base_config, tts, tmp_path):
    config = replace(base_config, voices=str(tmp_path / "v"), max_upload_mb=0.1, max_voice_seconds=2.0)
    with serving(config, tts) as client:
        big = client.post("/v1/audio/voices", files={"audio": ("v.wav", voice_wav(3.0), "audio/wav")},
                          data={"name": "big"})
        assert big.status_code == 413 and big.json()["error"]["param"] == "audio"
        long = client.post("/v1/audio/voices", files={"audio": ("v.wav", _flac(3.0), "audio/flac")},
                           data={"name": "long"})
        assert long.status_code == 400 and "at most 2 s" in long.json()["error"]["message"]
        assert client.get("/v1/audio/voices").json() == {"voices": []}


def _flac(seconds: float) -> bytes:
    from indextts2_onnx.runtime.audio import synthetic_voice

    buf = io.BytesIO()
    sf.write(buf, synthetic_voice(seconds, 8000), 8000, format="FLAC")  # small enough for the size limit
    return buf.getvalue()


def test_voices_survive_a_restart_and_dropped_files_register(base_config, tts, tmp_path):
    folder = tmp_path / "voices"
    config = replace(base_config, voices=str(folder))
    with serving(config, tts) as client:
        assert client.post("/v1/audio/voices", files={"audio": ("c.wav", voice_wav(), "audio/wav")},
                           data={"name": "carol"}).status_code == 201
        first = client.post("/v1/audio/speech", json={"input": TEXT, "voice": "carol", "response_format": "wav",
                                                      "seed": 3, **SMALL}).content
    (folder / "dave.wav").write_bytes(voice_wav(3.0))
    (folder / "broken.wav").write_bytes(b"RIFF but not really")
    with serving(config, tts) as client:
        ids = [v["id"] for v in client.get("/v1/audio/voices").json()["voices"]]
        assert ids == ["carol", "dave"]  # the broken file is skipped, the server still starts
        again = client.post("/v1/audio/speech", json={"input": TEXT, "voice": "carol", "response_format": "wav",
                                                      "seed": 3, **SMALL}).content
        assert again == first
        assert client.post("/v1/audio/speech", json={"input": TEXT, "voice": "dave", **SMALL}).status_code == 200


# --- errors ---------------------------------------------------------------------------------------

BAD_REQUESTS = [  # (body changes, param the error names)
    ({"response_format": "aac"}, "response_format"),
    ({"speed": 1.5}, "speed"),
    ({"voice": "nobody"}, "voice"),
    ({"voice": "../../etc/passwd"}, "voice"),
    ({"voice": 5}, "voice"),
    ({"input": ""}, "input"),
    ({"input": "x" * 5000}, "input"),
    ({"input": 12}, "input"),
    ({"steps": 0}, "steps"),
    ({"seed": -1}, "seed"),
    ({"max_codes": 10**6}, "max_codes"),
    ({"min_codes": 31}, "min_codes"),  # more than max_codes
    ({"preset": "turbo"}, "preset"),
    ({"emotion_vector": [1, 2]}, "emotion_vector"),
    ({"emotion_alpha": float("nan")}, None),  # not JSON: refused as a body error
    ({"emotion_voice": "nobody"}, "emotion_voice"),
    ({"stream_format": "chunks"}, "stream_format"),
    ({"instructions": "  "}, "instructions"),  # an emotion description must say something
    ({"temperature": 0.5}, "temperature"),  # not an option the server takes
]


@pytest.mark.parametrize("change,param", BAD_REQUESTS, ids=[next(iter(c)) for c, _ in BAD_REQUESTS])
def test_bad_request_catalogue(server, change, param):
    body = {"input": TEXT, "voice": "alice", **SMALL, **change}
    try:
        r = server.post("/v1/audio/speech", json=body)
    except ValueError:  # httpx refuses to send NaN: send the raw text, as a careless client would
        r = server.post("/v1/audio/speech", content=json.dumps(body).encode(),
                        headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param, error
    assert server.get("/health").status_code == 200


def test_malformed_bodies_and_unknown_routes(server):
    r = server.post("/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert server.post("/v1/audio/speech", json=[1, 2]).status_code == 400
    assert server.get("/v1/nothing").json()["error"]["message"]
    assert server.get("/v1/nothing").status_code == 404
    assert server.delete("/v1/audio/voices/.hidden").status_code == 400
    assert server.get("/health").status_code == 200


# --- admission, cancellation, auth --------------------------------------------------------------


def test_full_queue_answers_429_with_retry_after(base_config, tts, tmp_path):
    config = replace(base_config, voices=str(tmp_path / "v"), workers=1, max_queue=0)
    with serving(config, tts) as client:
        client.post("/v1/audio/voices", files={"audio": ("v.wav", voice_wav(), "audio/wav")}, data={"name": "v"})
        results: list = []
        start = threading.Barrier(4)

        def one(i):
            start.wait()
            results.append(client.post("/v1/audio/speech", json={"input": " ".join([TEXT] * 4), "voice": "v",
                                                                  "seed": i, "steps": 50}))  # > 1 s each

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert 429 in codes and 200 in codes and set(codes) == {200, 429}, codes
        refused = [r for r in results if r.status_code == 429]
        assert all(r.headers["Retry-After"] == str(config.retry_after_s) for r in refused)
        assert all(r.json()["error"]["type"] == "rate_limit_error" for r in refused)
        assert metric(client, "indextts2_rejected_total") == len(refused)
        assert metric(client, "indextts2_queue_depth") == 0 and metric(client, "indextts2_in_flight") == 0


def _wait_for(client, name: str, value: float, seconds: float = 60) -> float:
    deadline = time.monotonic() + seconds
    while (v := metric(client, name)) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return v


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_disconnect_cancels(base_config, tts, tmp_path, stream):
    import httpx

    config = replace(base_config, voices=str(tmp_path / "v"))
    with serving(config, tts) as client:
        client.post("/v1/audio/voices", files={"audio": ("v.wav", voice_wav(), "audio/wav")}, data={"name": "v"})
        # 15 segments, 300 flow-matching steps each: about 8 s of audio in 20 s or more
        body = {"input": " ".join([TEXT] * 60), "voice": "v", "seed": 1, "steps": 300, "response_format": "pcm"}
        if stream:
            with client.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "audio"}) as r:
                next(r.iter_raw())  # the first chunk, then the client hangs up
        else:
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/audio/speech", json=body, timeout=1.0)
        assert _wait_for(client, "indextts2_cancelled_total", 1.0) == 1.0
        assert _wait_for(client, "indextts2_in_flight", 0.0) == 0.0
        assert client.app.state.engine.scheduler.rows_in_use == 0  # its decoder rows were freed
        assert metric(client, "indextts2_audio_seconds_total") < 4.0  # it stopped early (8.1 s in all)
        assert client.post("/v1/audio/speech", json={**body, "input": TEXT, **SMALL}).status_code == 200


def test_a_request_cancelled_in_the_queue_gives_its_place_back(server, base_config, tts):
    """One worker, one queue place: B waits behind A; cancelling B's task while it waits frees its place
    (and it never runs), and once A is done the engine holds nothing."""
    import asyncio

    from indextts2_onnx.runtime.serve.engine import Engine, Job, QueueFull
    from indextts2_onnx.runtime.serve.metrics import ServerMetrics
    from indextts2_onnx.runtime.serve.scheduler import Ticket
    from indextts2_onnx.runtime.serve.voices import VoiceStore

    async def scenario():
        engine = Engine(tts, replace(base_config, workers=1, max_queue=1), ServerMetrics())
        try:
            speaker = VoiceStore(base_config.voices).get("alice")
            job = Job(TEXT, speaker, SynthesisOptions(seed=1, chunked=True, **SMALL).resolve(
                tts.manifest.gpt.max_mel_tokens))
            engine.admit()
            a = engine.run(job, Ticket())
            first = await a.__anext__()  # A holds the only worker
            engine.admit()
            b_ticket = Ticket()
            b = asyncio.ensure_future(engine.run(job, b_ticket).__anext__())
            await asyncio.sleep(0.2)
            assert not b.done() and engine._admitted == 2
            with pytest.raises(QueueFull):
                engine.admit()
            b.cancel()
            with pytest.raises(asyncio.CancelledError):
                await b
            assert engine._admitted == 1 and engine.metrics.queue_depth._value.get() == 0
            engine.admit()  # B's place is free again
            engine.leave_queue()
            chunks = [first] + [c async for c in a]
            assert chunks[-1].final
            for _ in range(100):  # the slot is given back once A's last pool task returned
                if engine._admitted == 0:
                    break
                await asyncio.sleep(0.05)
            assert engine._admitted == 0 and engine.metrics.in_flight._value.get() == 0
        finally:
            engine.close()

    asyncio.run(scenario())


def test_api_key(base_config, tts, tmp_path):
    config = replace(base_config, voices=str(tmp_path / "v"), api_key="s3cret")
    with serving(config, tts, key="s3cret") as client:
        assert client.get("/v1/models").status_code == 200
        assert client.get("/health", headers={"Authorization": ""}).status_code == 200
        for auth in ("", "Bearer wrong", "s3cret", "Basic s3cret"):
            r = client.get("/v1/models", headers={"Authorization": auth})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", auth
        for path in ("/metrics", "/ready", "/v1/audio/voices"):
            assert client.get(path, headers={"Authorization": ""}).status_code == 401, path


def test_api_key_from_environment(monkeypatch, base_config):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ServerConfig(bundle=base_config.bundle).api_key == "from-env"
    assert ServerConfig(bundle=base_config.bundle, api_key="flag").api_key == "flag"
    monkeypatch.delenv(API_KEY_ENV)
    assert ServerConfig(bundle=base_config.bundle).api_key is None


def test_server_without_batching(tiny_concat_bundle, base_config, tmp_path):
    """A bundle without the shared-buffer decoder decodes each request on its worker, same API."""
    tts = IndexTTS2(tiny_concat_bundle, threads=1)
    config = replace(base_config, bundle=str(tiny_concat_bundle), voices=str(tmp_path / "v"))
    with serving(config, tts) as client:
        assert client.app.state.engine.scheduler is None
        client.post("/v1/audio/voices", files={"audio": ("v.wav", voice_wav(), "audio/wav")}, data={"name": "v"})
        r = client.post("/v1/audio/speech", json={"input": TEXT, "voice": "v", "seed": 2, "response_format": "wav",
                                                  **SMALL})
        assert r.status_code == 200 and wav_samples(r.content).size > 0


# --- the OpenAI client ----------------------------------------------------------------------------


def test_openai_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=str(server.base_url) + "/v1", api_key="unused")
    extra = {"seed": 7, **SMALL}
    whole = client.audio.speech.create(model="indextts2", voice="alice", input=TEXT, response_format="wav",
                                       extra_body=extra)
    assert whole.content == speech(server).content
    with client.audio.speech.with_streaming_response.create(model="indextts2", voice="alice", input=TEXT,
                                                            response_format="pcm",
                                                            extra_body={**extra, "stream_format": "audio"}) as r:
        streamed = b"".join(r.iter_bytes())
    assert len(streamed) > 0 and len(streamed) % 2 == 0
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="indextts2", voice="nobody", input=TEXT, extra_body=extra)
    assert "nobody" in str(e.value)
