"""The Ray Serve application end to end: a local Ray (2 CPUs, no dashboard), two replicas of the tiny
bundle behind Serve's HTTP proxy on a free loopback port, driven over HTTP as a client would.

Checked: both replicas answer speech (X-Replica), every answer is a playable WAV, a streamed response
arrives in pieces through Ray's proxy, and a voice uploaded through one replica works on the other (the
voices folder is shared). Skipped without `ray[serve]`. About 15 s on a 2-core machine (Ray and two
replicas up in ~10 s, down in ~5 s), plus the session's tiny bundle export if no other test made it."""

from __future__ import annotations

import io
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install 'indextts2-onnx[ray]')")
httpx = pytest.importorskip("httpx")
sf = pytest.importorskip("soundfile")

from indextts2_onnx.runtime.audio import synthetic_voice  # noqa: E402
from indextts2_onnx.runtime.serve.config import ServerConfig  # noqa: E402
from indextts2_onnx.runtime.errors import InputError  # noqa: E402
from indextts2_onnx.runtime.serve.ray_app import REPLICA_HEADER, RayOptions, app_builder, start, stop  # noqa: E402

TEXT = "Hello there, this is a test."
SMALL = {"max_codes": 20, "steps": 2, "response_format": "wav"}
FIRST_CHUNK_SAMPLES = int(25 * 1.72) * 256  # ChunkPlan's first chunk (25 codes): longer audio has >1 chunk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    """(client, voices folder): the application on two replicas, warm, until the module's tests are done."""
    config = ServerConfig(bundle=str(tiny_bundle), port=free_port(), voices=str(tmp_path_factory.mktemp("voices")),
                          workers=2, max_queue=4, threads=1)
    options = RayOptions(replicas=2, cpus_per_replica=1.0)
    t0 = time.monotonic()
    try:
        url = start(config, options, num_cpus=2)
    except BaseException:
        stop(options)
        raise
    client = httpx.Client(base_url=url, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:  # start() returns with every replica warm already
            assert time.monotonic() < deadline, "/ready never answered 200"
            time.sleep(0.5)
        print(f"Ray Serve up with 2 warm replicas in {time.monotonic() - t0:.1f} s")
        yield client
    finally:
        client.close()
        stop(options)  # serve.shutdown(), ray.shutdown()


@pytest.fixture(scope="module")
def voice(server):
    """(voice id, the replica that took the upload)."""
    buf = io.BytesIO()
    sf.write(buf, synthetic_voice(4.0, 22050), 22050, format="WAV")
    r = server.post("/v1/audio/voices", files={"audio": ("voice.wav", buf.getvalue(), "audio/wav")},
                    data={"name": "ray voice"})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.headers[REPLICA_HEADER]


def speak(client, voice_id: str, seed: int) -> tuple[str, int]:
    """(replica, samples) of one small whole-file request, checked to be a WAV with audio."""
    r = client.post("/v1/audio/speech", json={"input": TEXT, "voice": voice_id, "seed": seed, **SMALL})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("audio/wav")
    samples, rate = sf.read(io.BytesIO(r.content), dtype="float32")
    assert rate == 22050 and len(samples) > 0
    return r.headers[REPLICA_HEADER], len(samples)


def test_both_replicas_answer(server, voice):
    assert server.get("/health").status_code == 200
    seen: set[str] = set()
    seed = 0
    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):  # rounds of 4 concurrent requests until both replicas have answered
            results = list(pool.map(lambda s: speak(server, voice[0], s), range(seed, seed + 4)))
            seed += 4
            seen |= {replica for replica, _ in results}
            if len(seen) == 2:
                break
    assert len(seen) == 2, f"only {seen} answered {seed} requests"


def test_voice_uploaded_through_one_replica_works_on_the_other(server, voice):
    voice_id, uploader = voice
    others = []
    for seed in range(16):
        replica, _ = speak(server, voice_id, 100 + seed)
        if replica != uploader:
            others.append(replica)
            break
    assert others, f"every request went to {uploader}, the replica that took the upload"
    listed = {v["id"] for v in server.get("/v1/audio/voices").json()["voices"]}
    assert voice_id in listed


def test_stream_arrives_in_pieces(server, voice):
    """A stream whose audio spans more than the first chunk comes through Ray's proxy as several pieces."""
    for seed in range(8):  # a seed whose (random-weight) codes run past the first chunk
        body = {"input": TEXT, "voice": voice[0], "seed": seed, "max_codes": 80, "steps": 2,
                "response_format": "pcm", "stream_format": "audio"}
        with server.stream("POST", "/v1/audio/speech", json=body) as r:
            assert r.status_code == 200
            assert REPLICA_HEADER.lower() in r.headers
            pieces = [len(piece) for piece in r.iter_raw() if piece]
        if sum(pieces) // 2 > FIRST_CHUNK_SAMPLES:
            assert len(pieces) >= 2, f"{sum(pieces)} bytes came as {pieces}"
            return
    pytest.fail("no seed produced audio longer than one streaming chunk")


# --- no cluster needed: options -> deployment settings, the config-file builder -----------------------------


def test_options_from_cli_args_and_deployment_settings():
    import argparse

    config = ServerConfig(bundle="b", workers=3, max_queue=5)
    fixed = RayOptions.from_args(argparse.Namespace(replicas=2, max_replicas=None, target_ongoing_requests=2.0,
                                                    max_ongoing_requests=None, max_queued_requests=-1,
                                                    ray_address=None, cpus_per_replica=1.0, gpus_per_replica=0.0))
    assert fixed.deployment_options(config) == {
        "num_replicas": 2, "max_ongoing_requests": 8, "max_queued_requests": -1,
        "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0}}
    scaled = RayOptions(replicas=1, max_replicas=4, target_ongoing_requests=3.0, max_ongoing_requests=6,
                        max_queued_requests=10, gpus_per_replica=0.5).deployment_options(config)
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3.0}
    assert (scaled["max_ongoing_requests"], scaled["max_queued_requests"]) == (6, 10)
    assert scaled["ray_actor_options"]["num_gpus"] == 0.5
    with pytest.raises(InputError, match="replicas"):
        RayOptions(replicas=0)


def test_app_builder_for_serve_run_configs(tiny_bundle, tmp_path):
    from indextts2_onnx.runtime.errors import BundleError

    app = app_builder({"bundle": str(tiny_bundle), "voices": str(tmp_path / "v"), "workers": 2, "replicas": 2})
    deployment = app._bound_deployment  # private, but the only view of what Serve would be given
    assert deployment.name == "IndexTTS2" and deployment.num_replicas == 2
    assert deployment.max_ongoing_requests == 2 + 16
    with pytest.raises(InputError, match="unknown field.*replica_count"):
        app_builder({"bundle": str(tiny_bundle), "replica_count": 2})
    with pytest.raises(BundleError, match="no such bundle"):
        app_builder({"bundle": str(tmp_path / "missing")})
