"""The speech server as a Ray Serve application: `indextts2-onnx serve --ray`, or `serve run` with a config.

Why Ray Serve (../shared/spec/serving.md, "Scale-out engines"): the runtime is a Python decode loop over ONNX
Runtime sessions, and Ray Serve keeps that loop ordinary in-process code while adding what one uvicorn
process cannot: several copies of the model behind one HTTP port, on one machine or a cluster, autoscaling
between a minimum and a maximum number of copies, and a bounded queue in front of them. Triton would move
the loop into BLS round trips per step; KServe's autoscaling needs Kubernetes.

Design:

* One model per replica. Each replica is a Ray actor that builds the very app `indextts2-onnx serve` runs,
  `create_app(config)`, inside itself: its own IndexTTS2, worker pool, decode scheduler, admission and
  metrics. The app is built IN the replica, never pickled: `serve.ingress` is given a builder function
  (documented since Ray 2.7: "a builder function that returns an ASGI app ... evaluated when the
  deployment is initialized on replicas"), which loads the bundle there. HTTP is unchanged - same paths,
  same JSON, same errors - and streamed responses stream through Ray's HTTP proxy chunk by chunk.
* A replica takes traffic only once warm: the app's lifespan starts the warm-up in the background, and
  the wrapper here holds the lifespan's start-up (which Serve awaits before it routes to a replica) until
  /ready would answer 200. `serve.run` therefore returns with every replica warm, and a replica added by
  the autoscaler gets no request while it is still loading.
* Voices on shared storage. The voices folder is the truth for every replica (VoiceStore reads it on each
  lookup), so a voice uploaded through one replica is usable through all of them. On one machine that is
  a local folder; on a cluster it must be a shared file system mounted at the same path on every node
  (bundle likewise). Relative paths are made absolute where the application is built.
* Back-pressure, two levels: each replica's own admission (`workers` synthesizing + `max_queue` waiting,
  beyond that 429 with Retry-After), and Ray's: a replica is sent at most `max_ongoing_requests` requests
  at once (default workers + max_queue: exactly what the app admits, so the excess waits in Ray's router,
  where whichever replica frees up first takes it, rather than being refused by one busy replica; set it
  higher to let replicas answer 429 themselves). At most `max_queued_requests` requests wait in Ray (-1:
  no limit); beyond that Ray's proxy answers 503 (plain text, with Retry-After = retry_after_s where the
  installed Ray has `backpressure_config`, as 2.60 has).
* Every response carries `X-Replica` (the Serve replica id), so routing can be seen from outside.

Entry points: `run_ray(config, options)` (the CLI: a local Ray unless `ray_address`, blocks until Ctrl-C),
`build(config, options)` (the bound application, for `serve.run`), `app_builder(args)` (for `serve run
configs/serve_ray.yaml`: args hold ServerConfig and RayOptions fields).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import os
import re
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray  # here, not later: without it `serve --ray` says at once which extra to install

from ..errors import IndexTTS2Error, InputError
from ..manifest import load_manifest
from .app import create_app
from .config import ServerConfig

_LOG = logging.getLogger(__name__)

APP_NAME = "indextts2"  # the Serve application
DEPLOYMENT = "IndexTTS2"  # its one deployment
REPLICA_HEADER = "X-Replica"
WARMUP_WAIT_S = 900.0  # a replica that is not warm after this takes traffic anyway (and says so)


class RayServeError(IndexTTS2Error):
    """Ray could not start the application (replicas failed to start, resources missing)."""

    stage = "serve"


# --- options --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    """How the application is spread over Ray.

    replicas                : replicas (each with its own model); the minimum when autoscaling
    max_replicas            : autoscale between `replicas` and this many (None, or <= replicas: fixed)
    target_ongoing_requests : autoscaling target of requests in flight per replica
    max_ongoing_requests    : requests Ray sends one replica at once (None: the app's workers + max_queue)
    max_queued_requests     : requests Ray holds for busy replicas before answering 503 (-1: no limit)
    ray_address             : an existing Ray cluster ("auto", "ray://host:10001", ...); None: start a local one
    cpus_per_replica, gpus_per_replica: each replica's Ray resources (ray_actor_options)
    """

    replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    max_ongoing_requests: int | None = None
    max_queued_requests: int = -1
    ray_address: str | None = None
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")

        integer("replicas", 1)
        if self.max_replicas is not None:
            integer("max_replicas", 1)
        if self.max_ongoing_requests is not None:
            integer("max_ongoing_requests", 1)
        integer("max_queued_requests", -1)
        for name in ("target_ongoing_requests", "cpus_per_replica", "gpus_per_replica"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InputError(f"{name}: expected a number >= 0, got {value!r}")
        if not self.target_ongoing_requests > 0:
            raise InputError("target_ongoing_requests: expected a positive number, "
                             f"got {self.target_ongoing_requests!r}")

    @classmethod
    def from_args(cls, args: Any) -> "RayOptions":
        """The options from `indextts2-onnx serve --ray`'s parsed arguments (missing ones: the defaults)."""
        return cls(**{f.name: getattr(args, f.name, f.default) for f in dataclasses.fields(cls)})

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None and self.max_replicas > self.replicas

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.autoscaling else self.replicas

    def deployment_options(self, config: ServerConfig) -> dict:
        """Keyword arguments of `serve.deployment` for this application."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests or config.workers + config.max_queue,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica},
        }
        if self.autoscaling:
            options["autoscaling_config"] = {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": self.target_ongoing_requests}
        else:
            options["num_replicas"] = self.replicas
        return options

    def describe(self) -> str:
        if self.autoscaling:
            return f"{self.replicas}-{self.max_replicas} replicas, autoscaling"
        return f"{self.replicas} replica" + ("s" if self.replicas != 1 else "")


# --- inside a replica -----------------------------------------------------------------------------------


def replica_id() -> str:
    """This replica's Serve id (the pid outside a replica)."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_tag
    except Exception:  # not in a replica (RayServeException), or an older Ray without the context
        return f"pid-{os.getpid()}"


class ReplicaHeader:
    """ASGI middleware: every HTTP response says which replica answered (`X-Replica`)."""

    def __init__(self, app, replica: str):
        self.app, self.header = app, (REPLICA_HEADER.lower().encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        return await self.app(scope, receive, sending)


def replica_app(config: ServerConfig):
    """The app one replica serves: `create_app(config)` (loading the bundle here), with the X-Replica header,
    and a start-up that ends once the warm-up has (Serve routes to a replica only after its start-up)."""
    app = create_app(config)
    replica = replica_id()
    app.add_middleware(ReplicaHeader, replica=replica)
    started = app.router.lifespan_context
    ready: threading.Event = app.state.engine.ready

    @asynccontextmanager
    async def warm_lifespan(a):
        async with started(a) as state:
            t0 = time.monotonic()
            if not await asyncio.to_thread(ready.wait, WARMUP_WAIT_S):
                _LOG.warning("replica %s: not warm after %.0f s; taking requests anyway", replica, WARMUP_WAIT_S)
            _LOG.info("replica %s ready (warm-up %.1f s)", replica, time.monotonic() - t0)
            yield state

    app.router.lifespan_context = warm_lifespan
    return app


# --- the application ------------------------------------------------------------------------------------


def replica_config(config: ServerConfig, options: RayOptions) -> ServerConfig:
    """`config` as a replica runs it: absolute bundle and voices paths (a replica's working folder is not
    the caller's), and on CPU without --threads, intra-op threads = the replica's CPUs (ONNX Runtime would
    otherwise give every replica a thread per core of the machine)."""
    changes: dict[str, Any] = {"bundle": str(Path(config.bundle).expanduser().resolve()),
                               "voices": str(Path(config.voices).expanduser().resolve())}
    if config.threads is None and config.device == "cpu":
        changes["threads"] = max(1, int(round(options.cpus_per_replica)))
    return dataclasses.replace(config, **changes)


def build(config: ServerConfig, options: RayOptions = RayOptions()):
    """The Serve application (`serve.run(build(config, options), route_prefix="/")`): one deployment whose
    replicas each serve `create_app(config)`."""
    from ray import serve

    config = replica_config(config, options)

    def build_asgi_app():  # runs in each replica, when it starts
        return replica_app(config)

    ingress = serve.ingress(build_asgi_app)()
    extra: dict[str, Any] = {}
    accepted = inspect.signature(serve.deployment).parameters  # both are newer than Ray 2.40
    if "max_constructor_retry_count" in accepted:
        extra["max_constructor_retry_count"] = 3  # a replica that cannot load its bundle will not later
    if "backpressure_config" in accepted:  # Ray's 503 (max_queued_requests) says when to retry, as our 429
        extra["backpressure_config"] = {"status_code": 503, "retry_after_s": config.retry_after_s}
    deployment = serve.deployment(ingress, name=DEPLOYMENT, **options.deployment_options(config), **extra)
    return deployment.bind()


def split_args(args: dict) -> tuple[ServerConfig, RayOptions]:
    """A flat dict of ServerConfig and RayOptions fields (a `serve run` config's `args:`) -> both."""
    args = dict(args or {})
    server = {f.name for f in dataclasses.fields(ServerConfig)}
    scaling = {f.name for f in dataclasses.fields(RayOptions)}
    unknown = sorted(set(args) - server - scaling)
    if unknown:
        raise InputError(f"args: unknown field(s) {', '.join(unknown)}",
                         f"known: {', '.join(sorted(server | scaling))}")
    if "bundle" not in args:
        raise InputError("args: `bundle` is required", "the bundle folder, on every node at the same path")
    config = ServerConfig(**{k: v for k, v in args.items() if k in server})
    return config, RayOptions(**{k: v for k, v in args.items() if k in scaling})


def app_builder(args: dict):
    """Application builder for `serve run` / `serve deploy` config files:

        applications:
          - name: indextts2
            route_prefix: /
            import_path: indextts2_onnx.runtime.serve.ray_app:app_builder
            args: {bundle: onnx_models/demo, voices: voices, replicas: 2}

    `args` holds ServerConfig fields (bundle, voices, workers, ...) and RayOptions fields (replicas,
    max_replicas, ...); host and port are the config file's `http_options`, and ray_address its cluster."""
    config, options = split_args(args)
    if options.ray_address is not None:
        raise InputError("args: ray_address is not an application argument",
                         "pass the cluster to `serve run --address` / `serve deploy --address`")
    load_manifest(Path(config.bundle))
    return build(config, options)


# --- the command ----------------------------------------------------------------------------------------


def check_local_resources(options: RayOptions) -> None:
    """RayServeError when this Ray cluster cannot hold the replicas Serve would wait for (forever)."""
    total = ray.cluster_resources()
    for name, each in (("CPU", options.cpus_per_replica), ("GPU", options.gpus_per_replica)):
        amount = options.replicas * each
        if amount > total.get(name, 0.0) + 1e-9:
            raise RayServeError(f"{options.replicas} x {each:g} {name} per replica = {amount:g} {name}, the Ray "
                                f"cluster has {total.get(name, 0.0):g}",
                                f"lower --replicas or --{name.lower()}s-per-replica")


def failure_reason() -> str:
    """The last line of the deployment's status message (a failed replica's exception, without its
    module path), or "" when Serve has none."""
    from ray import serve

    try:
        app = serve.status().applications[APP_NAME]
        message = app.deployments[DEPLOYMENT].message if DEPLOYMENT in app.deployments else app.message
    except Exception:  # Serve itself is gone, or an older status layout
        return ""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return ""
    head, sep, rest = lines[-1].partition(": ")
    return rest if sep and re.fullmatch(r"[\w.]+", head) else lines[-1]


def start(config: ServerConfig, options: RayOptions, num_cpus: float | None = None) -> str:
    """Start Ray (local unless options.ray_address; `num_cpus` for a local one, default every core but at
    least what the replicas need), Serve's HTTP proxy on config.host:config.port and the application; return
    its URL once every replica is warm. Undo with `stop(options)`."""
    from ray import serve
    from ray.serve.config import HTTPOptions

    quiet = {"log_level": "WARNING", "enable_access_log": False}
    if not logging.getLogger().isEnabledFor(logging.INFO):  # Serve's driver-side INFO lines, unless verbose
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if not ray.is_initialized():
        if options.ray_address is None:
            if num_cpus is None:
                num_cpus = max(os.cpu_count() or 1, math.ceil(options.most_replicas * options.cpus_per_replica))
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=options.ray_address, logging_level=logging.WARNING)
    try:
        if options.ray_address is None:
            check_local_resources(options)
        serve.start(http_options=HTTPOptions(host=config.host, port=config.port), logging_config=quiet)
        try:
            serve.run(build(config, options), name=APP_NAME, route_prefix="/", logging_config=quiet)
        except RuntimeError as e:  # Serve's "Deploying application indextts2 failed: ..."
            raise RayServeError(f"the replicas did not start: {failure_reason() or e}",
                                "the replica logs are in the serve/ folder of the Ray session's logs") from e
    except BaseException:
        stop(options)
        raise
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}"


def stop(options: RayOptions) -> None:
    """Take the application down: all of Serve and the local Ray that `start` made; on an existing
    cluster (options.ray_address) only this application (other applications keep running)."""
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        if options.ray_address is None:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    finally:
        if options.ray_address is None:
            ray.shutdown()


def run_ray(config: ServerConfig, options: RayOptions) -> int:
    """`indextts2-onnx serve --ray`: check the bundle (a bad path fails in a second, before Ray starts), make
    the voices folder, serve until Ctrl-C, then shut Serve (and a local Ray) down -> 0."""
    load_manifest(Path(config.bundle))
    Path(config.voices).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    url = start(config, options)
    try:
        auth = "Bearer auth on" if config.api_key else "no auth"
        where = f"the Ray cluster at {options.ray_address}" if options.ray_address else "a local Ray"
        print(f"serving {config.bundle} on {url} with Ray Serve ({options.describe()} on {where}, ready in "
              f"{time.monotonic() - t0:.0f} s; {auth}; voices in {config.voices})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    finally:
        stop(options)
    return 0
