"""Helpers for the server tests: the real server on a loopback port (uvicorn in a thread), a voice
recording, and reading /metrics."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import httpx
import soundfile as sf
import uvicorn

from indextts2_onnx.runtime import IndexTTS2
from indextts2_onnx.runtime.audio import synthetic_voice
from indextts2_onnx.runtime.serve.app import create_app
from indextts2_onnx.runtime.serve.config import ServerConfig

SR = 22050


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def voice_wav(seconds: float = 4.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synthetic_voice(seconds, SR), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def metric(client, name: str) -> float:
    """A sample of /metrics by its full name and labels, e.g. 'indextts2_in_flight'."""
    text = client.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@contextmanager
def serving(config: ServerConfig, tts: IndexTTS2, key: str | None = None):
    """A started server (ready: warmed up) -> an httpx client on it; stopped on exit."""
    config = replace(config, port=free_port())
    app = create_app(config, tts)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=f"http://127.0.0.1:{config.port}", timeout=120, headers=headers)
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the server did not warm up"
            time.sleep(0.05)
        client.app = app
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)
