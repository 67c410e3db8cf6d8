"""`ServerConfig`: everything `indextts2-onnx serve` (and the Ray Serve deployment) is started with,
as one frozen value; the defaults live here and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InputError

API_KEY_ENV = "INDEXTTS2_API_KEY"


@dataclass(frozen=True)
class ServerConfig:
    """How one server process runs.

    bundle, device, threads, verify: as IndexTTS2's arguments
    voices          : the voices folder (created if missing; audio files dropped there are registered)
    workers         : speech requests synthesized at once (threads of the worker pool); their GPT
                      decoding is batched (`batch`), the other stages run side by side
    max_queue       : admitted requests waiting for a worker beyond those; more get 429 + Retry-After
    batch           : decode concurrent requests' codes in one batch (needs the shared-buffer decoder;
                      a bundle without it decodes each request on its worker)
    max_chars       : longest `input` accepted (OpenAI's limit is 4096)
    max_upload_mb, max_voice_seconds: voice uploads larger or longer are refused (413 / 400)
    api_key         : when set, every endpoint but /health needs `Authorization: Bearer <key>`
                      (None here: the INDEXTTS2_API_KEY environment variable, if set)
    warmup          : run one short synthesis at start; /ready answers 200 once it is done
    lang            : the language of requests that name none (their `lang` field); IndexTTS-2.5 bundles
                      need one or the other, 2.0 bundles speak zh/en only
    emotion_text    : load the bundle's emotion-from-text model where it has one (requests' `instructions`,
                      `emotion_text`, `use_emotion_text`); False saves its memory and answers them 400
    """

    bundle: str
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    threads: int | None = None
    verify: bool = True
    voices: str = "voices"
    workers: int = 4
    max_queue: int = 16
    batch: bool = True
    max_chars: int = 4096
    max_upload_mb: float = 10.0
    max_voice_seconds: float = 60.0
    api_key: str | None = None
    warmup: bool = True
    retry_after_s: int = 2
    lang: str | None = None
    emotion_text: bool = True

    def __post_init__(self) -> None:
        for name, low in (("workers", 1), ("max_queue", 0), ("max_chars", 1), ("port", 0), ("retry_after_s", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
        for name in ("max_upload_mb", "max_voice_seconds"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        if self.api_key is None and os.environ.get(API_KEY_ENV):
            object.__setattr__(self, "api_key", os.environ[API_KEY_ENV])
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)
