"""The HTTP API: OpenAI's `POST /v1/audio/speech` and the server's own endpoints, on FastAPI.

    POST   /v1/audio/speech          text -> audio (whole, or streamed: stream_format "audio" / "sse")
    GET    /v1/audio/voices          registered voices            GET  /v1/models      ["indextts2"]
    POST   /v1/audio/voices          multipart `audio` + `name` -> 201 {"id", "name"}
    DELETE /v1/audio/voices/{id}
    GET    /health  (liveness, never needs a key)   GET /ready (warmed up)   GET /metrics (Prometheus)

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with a 4xx for anything
the client can fix (validation errors too: 400, not FastAPI's 422) and a 5xx for the server's own
failures; a failed request never stops the server.

`create_app(config)` loads the bundle (BundleError / InputError when it cannot); `create_app(config,
tts=...)` serves an IndexTTS2 that is already loaded (tests, the Ray Serve deployment).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import re
import threading
from contextlib import asynccontextmanager
from typing import Literal, Optional, Union

import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import IndexTTS2Error, InputError
from ..options import SynthesisOptions
from ..pipeline import IndexTTS2
from .config import ServerConfig
from .encoding import FORMATS, MEDIA_TYPES, EncodingError, StreamEncoder, check_format, encode, output_rate
from .engine import Engine, Job, QueueFull
from .metrics import CONTENT_TYPE, ServerMetrics
from .scheduler import Cancelled, Ticket
from .voices import VoiceNotFound, VoiceStore

_LOG = logging.getLogger(__name__)

MODEL_ID = "indextts2"
OPEN_ENDPOINTS = ("/health",)  # reachable without the API key


# --- requests and errors ------------------------------------------------------------------------


class SpeechRequest(BaseModel):
    """OpenAI's speech request, and IndexTTS2's options as extra fields. Unknown fields are refused
    (a misspelt option should not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    model: str = MODEL_ID  # any string: one model is served
    input: str
    voice: Union[str, dict]  # a registered voice id, or OpenAI's {"id": ...}
    response_format: str = "mp3"  # OpenAI's default
    speed: float = 1.0
    stream_format: Optional[Literal["audio", "sse"]] = None  # None: one whole file
    # OpenAI's voice instructions: read as an emotion description by the bundle's emotion model
    # (= emotion_text with use_emotion_text)
    instructions: Optional[str] = None
    # IndexTTS2's own
    emotion_voice: Optional[str] = None
    emotion_alpha: float = 1.0
    emotion_vector: Optional[list[float]] = Field(default=None)
    # emotion from text (upstream's use_emo_text / emo_text): emotion_text, or `input` when it is absent
    use_emotion_text: bool = False
    emotion_text: Optional[str] = None
    seed: Optional[int] = None
    preset: str = "default"
    steps: Optional[int] = None
    max_codes: Optional[int] = None
    min_codes: int = 0  # no stop before this many codes: fixes lengths for load tests on random weights
    lang: Optional[str] = None  # the text's language: IndexTTS-2.5 bundles need one (en zh ja es ar zhen)
    duration_factor: float = 1.0  # IndexTTS-2.5 only: speech length x this (0.5..2)


class ApiError(Exception):
    """An error answered as OpenAI's JSON body with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")


def error_body(message: str, kind: str, param: str | None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.kind, e.param), status_code=e.status, headers=e.headers)


def from_runtime(e: IndexTTS2Error, param: str | None = None) -> ApiError:
    """A runtime error as the API answers it: bad input 400, anything else 500."""
    text = e.message + (f" ({e.hint})" if e.hint else "")
    if isinstance(e, InputError):
        return ApiError(400, text, param)
    return ApiError(500, f"{e.stage}: {text}", param)


def voice_id_of(voice, param: str = "voice") -> str:
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(voice, str):
        raise ApiError(400, f"{param}: expected a voice id or {{\"id\": ...}}", param)
    return voice


# --- auth ---------------------------------------------------------------------------------------


class BearerAuth:
    """ASGI middleware: every HTTP request but OPEN_ENDPOINTS needs `Authorization: Bearer <key>`
    (compared in constant time); others get 401 in OpenAI's error shape."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_ENDPOINTS:
            return await self.app(scope, receive, send)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            response = JSONResponse(error_body("missing or wrong API key", "authentication_error", None,
                                               "invalid_api_key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class RequestCounter:
    """ASGI middleware: counts every HTTP request by route and status (indextts2_requests_total); a
    request whose client went away before any answer counts as 499."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = ["499"]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(route, status[0]).inc()


# --- the app ------------------------------------------------------------------------------------


def create_app(config: ServerConfig, tts: IndexTTS2 | None = None) -> FastAPI:
    """The server's ASGI app over `tts` (None: load config.bundle). Warm-up runs in the background
    when the app starts; /ready says when it is done."""
    if tts is None:
        tts = IndexTTS2(config.bundle, device=config.device, threads=config.threads, verify=config.verify,
                        max_text_chars=config.max_chars, emotion_text=config.emotion_text)
    metrics = ServerMetrics()
    engine = Engine(tts, config, metrics)
    voices = VoiceStore(config.voices)
    sr = tts.manifest.acoustic.sample_rate

    def prepare_file(path):
        speaker = tts.prepare_speaker(str(path))
        return speaker, sf.info(str(path)).duration

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        added = await asyncio.to_thread(voices.prepare_dropped, prepare_file)
        if added:
            _LOG.info("voices: registered %s", ", ".join(added))
        if config.warmup:
            threading.Thread(target=engine.warm_up, name="warm-up", daemon=True).start()
        else:
            engine.ready.set()
        yield
        engine.close()

    app = FastAPI(title="indextts2-onnx", lifespan=lifespan)
    app.state.engine, app.state.voices, app.state.metrics = engine, voices, metrics
    if config.api_key:
        app.add_middleware(BearerAuth, key=config.api_key)

    app.add_middleware(RequestCounter, metrics=metrics)  # outermost: 401s are counted too

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path", "form")]
        param = loc[0] if loc else None  # the request field (not pydantic's path into a union type)
        msg = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            msg = f"unknown field {param!r}"
        elif first.get("type") == "json_invalid":
            msg, param = "the body is not valid JSON", None
        return error_response(ApiError(400, f"{param}: {msg}" if param else msg, param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error_response(ApiError(e.status_code, str(e.detail), None, headers=getattr(e, "headers", None)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        _LOG.exception("unexpected error")
        return error_response(ApiError(500, f"internal error: {type(e).__name__}"))

    # --- health -----------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not engine.ready.is_set():
            return JSONResponse({"status": "warming up"}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0,
                                            "owned_by": "indextts2-onnx"}]}

    # --- voices -----------------------------------------------------------------------------------

    @app.get("/v1/audio/voices")
    async def list_voices():
        return {"voices": [{"id": v.id, "name": v.name, "created_at": v.created_at, "seconds": v.seconds}
                           for v in voices.list()]}

    @app.post("/v1/audio/voices", status_code=201)
    async def add_voice(request: Request, name: str = Form(...), audio: Optional[UploadFile] = File(None),
                        audio_sample: Optional[UploadFile] = File(None)):
        upload = audio or audio_sample
        if upload is None:
            raise ApiError(400, "audio: a voice recording is required (multipart field `audio`)", "audio")
        name = name.strip()
        if not name or len(name) > 128:
            raise ApiError(400, "name: 1 to 128 characters", "name")
        limit = int(config.max_upload_mb * 2**20)
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"audio: larger than {config.max_upload_mb:g} MB", "audio")
        try:
            info = sf.info(io.BytesIO(data))  # the header: a too long recording is refused before decoding
            if info.duration <= config.max_voice_seconds:
                samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile's errors vary by backend
            raise ApiError(400, f"audio: not an audio file this server can read ({e})", "audio") from e
        if info.duration > config.max_voice_seconds:
            raise ApiError(400, f"audio: {info.duration:.1f} s, at most {config.max_voice_seconds:g} s", "audio")
        try:
            engine.admit()
        except QueueFull:
            raise busy() from None
        try:
            speaker = await asyncio.to_thread(tts.prepare_speaker, (samples.mean(axis=1), rate))
            voice = await asyncio.to_thread(voices.add, name, speaker, "upload", info.duration)
        except IndexTTS2Error as e:
            raise from_runtime(e, "audio") from e
        finally:
            engine.leave_queue()
        return {"id": voice.id, "name": voice.name}

    @app.delete("/v1/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str):
        try:
            voice = voices.delete(voice_id)
        except VoiceNotFound as e:
            raise ApiError(404, e.message, "voice_id") from e
        except InputError as e:
            raise ApiError(400, e.message, "voice_id") from e
        return {"id": voice.id, "name": voice.name, "deleted": True}

    # --- speech -----------------------------------------------------------------------------------

    def busy() -> ApiError:
        return ApiError(429, "the server is busy: every worker and queue place is taken; retry later", None,
                        "rate_limit_error", {"Retry-After": str(config.retry_after_s)})

    def job_of(req: SpeechRequest) -> tuple[Job, str]:
        """The request checked into a Job and its format (ApiError for anything the client must fix)."""
        try:
            fmt = check_format(req.response_format)
        except EncodingError as e:
            raise ApiError(400, str(e), "response_format") from e
        if req.speed != 1.0:
            raise ApiError(400, "speed: only 1.0 is supported", "speed")
        if req.instructions is not None and (req.emotion_text is not None or req.use_emotion_text):
            raise ApiError(400, "instructions: give the emotion description once, as instructions or as "
                                "emotion_text", "instructions")
        emotion_param = "instructions" if req.instructions is not None else "emotion_text" \
            if req.emotion_text is not None else "use_emotion_text"
        use_text = req.instructions is not None or req.use_emotion_text or req.emotion_text is not None
        if use_text and not tts.has_emotion_text:
            why = ("the server runs with --no-emotion-text" if tts.manifest.emotion_text is not None
                   else "the bundle has no emotion model")
            raise ApiError(400, f"{emotion_param}: emotion from text is unavailable ({why}); use emotion_voice "
                                "or emotion_vector", emotion_param)
        if not req.input.strip():
            raise ApiError(400, "input: empty text", "input")
        if len(req.input) > config.max_chars:
            raise ApiError(400, f"input: {len(req.input)} characters, at most {config.max_chars}", "input")
        try:
            speaker = voices.get(voice_id_of(req.voice), "voice")
        except InputError as e:
            raise from_runtime(e, "voice") from e
        emotion = None
        if req.emotion_voice is not None:
            try:
                emotion = voices.get(req.emotion_voice, "emotion_voice")
            except InputError as e:
                raise from_runtime(e, "emotion_voice") from e
        fields = dict(preset=req.preset, seed=req.seed, steps=req.steps, max_codes=req.max_codes,
                      min_codes=req.min_codes,
                      emotion_audio=emotion, emotion_alpha=req.emotion_alpha, emotion_vector=req.emotion_vector,
                      use_emotion_text=use_text,
                      emotion_text=req.instructions if req.instructions is not None else req.emotion_text,
                      chunked=req.stream_format is not None, lang=req.lang if req.lang is not None else config.lang,
                      duration_factor=req.duration_factor)
        try:
            options = tts.resolve_options(SynthesisOptions(**fields), req.input)
        except InputError as e:
            param = param_of(fields, tts, e.message)
            raise from_runtime(e, emotion_param if param in ("emotion_text", "use_emotion_text") else param) from e
        try:
            tokens = sum(len(s) for s in tts.tokenize(req.input, options.max_tokens_per_segment, options.lang))
        except InputError as e:
            raise from_runtime(e, "input") from e
        return Job(req.input, speaker, options, tokens), fmt

    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest, request: Request):
        job, fmt = job_of(req)
        try:
            engine.admit()
        except QueueFull:
            raise busy() from None
        ticket = Ticket()
        chunks = engine.run(job, ticket)
        try:
            first = await first_or_disconnect(chunks, request, engine, ticket)
        except BaseException:
            if not ticket.started:  # cancelled before the generator ran: its finally never will
                engine.leave_queue()
            await chunks.aclose()
            raise
        headers = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache",
                   "X-Sample-Rate": str(output_rate(fmt, sr))}
        if req.stream_format is None:
            return await whole(chunks, first, fmt, request, engine, ticket, headers)
        if req.stream_format == "audio":
            body = audio_stream(chunks, first, StreamEncoder(fmt, sr))
            return StreamingResponse(body, media_type=MEDIA_TYPES[fmt], headers=headers)
        body = sse_stream(chunks, first, StreamEncoder(fmt, sr), job.tokens)
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    return app


def param_of(fields: dict, tts, message: str = "") -> str | None:
    """The request field an options error is about: the one its message names (`steps=0: ...` or
    `lang: ...`), else the one the options refuse on their own for this bundle (None: neither)."""
    named = re.match(r"(\w+)[=:]", message)
    if named and named.group(1) in fields:
        return named.group(1)
    for name, value in fields.items():
        try:  # emotion_text is only valid with use_emotion_text: judge it with that set
            both = {"use_emotion_text": True} if name == "emotion_text" and value is not None else {}
            tts.resolve_options(SynthesisOptions(**{name: value}, **both))
        except InputError:
            return "emotion_voice" if name == "emotion_audio" else name
    return None


async def next_chunk(chunks):
    """The next chunk, or None at the end; runtime errors as the API's."""
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except Cancelled:
        raise ApiError(499, "the request was cancelled") from None
    except IndexTTS2Error as e:
        raise from_runtime(e) from e


async def first_or_disconnect(chunks, request: Request, engine: Engine, ticket: Ticket):
    """The first chunk, watching for the client to go away meanwhile (then the job is cancelled)."""
    task = asyncio.ensure_future(next_chunk(chunks))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                engine.cancel(ticket)
                await asyncio.wait({task})
                raise ApiError(499, "the client went away")
    finally:
        if not task.done():
            task.cancel()


async def whole(chunks, first, fmt: str, request: Request, engine: Engine, ticket: Ticket, headers: dict):
    """A whole-file response: every chunk (one per text segment), joined and encoded at once."""
    parts, chunk = [first], first
    try:
        while chunk is not None and not chunk.final:
            chunk = await first_or_disconnect(chunks, request, engine, ticket)
            if chunk is not None:
                parts.append(chunk)
    finally:
        await chunks.aclose()
    audio = np.concatenate([c.audio for c in parts])
    m = parts[-1].metrics
    data = await asyncio.to_thread(encode, fmt, audio, first.sample_rate)
    headers = {**headers, "X-TTFA-Seconds": f"{m.ttfa_s:.3f}", "X-RTF": f"{m.rtf:.3f}",
               "X-Audio-Seconds": f"{m.audio_s:.3f}"}
    return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)


async def audio_stream(chunks, first, encoder: StreamEncoder):
    """Encoded audio as each chunk is made (a disconnect closes this generator: the job is cancelled)."""
    try:
        chunk = first
        while chunk is not None:
            data = encoder.write(chunk.audio)
            if data:
                yield data
            chunk = await next_chunk(chunks)
        tail = encoder.close()
        if tail:
            yield tail
    except ApiError as e:  # headers are sent: all a stream can do is stop short
        _LOG.warning("stream stopped: %s", e.message)
    finally:
        await chunks.aclose()


def sse_event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def sse_stream(chunks, first, encoder: StreamEncoder, text_tokens: int):
    """`speech.audio.delta` events (base64 audio) as chunks are made, then `speech.audio.done` with
    usage and timings, or `speech.audio.error`."""
    try:
        chunk, last = first, first
        while chunk is not None:
            last = chunk
            data = encoder.write(chunk.audio)
            if data:
                yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
            chunk = await next_chunk(chunks)
        tail = encoder.close()
        if tail:
            yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
        m = last.metrics
        yield sse_event({"type": "speech.audio.done",
                         "usage": {"input_tokens": text_tokens, "output_tokens": m.codes,
                                   "total_tokens": text_tokens + m.codes},
                         "ttfa_s": round(m.ttfa_s, 4), "rtf": round(m.rtf, 4), "audio_seconds": round(m.audio_s, 4)})
    except ApiError as e:
        yield sse_event({"type": "speech.audio.error", "error": error_body(e.message, e.kind, e.param)["error"]})
    finally:
        await chunks.aclose()


__all__ = ["create_app", "SpeechRequest", "MODEL_ID", "FORMATS"]
