"""The cluster a render runs on: connecting to it (or starting an embedded Ray), checking an
address before anything waits on it, the pool of FluxWorker actors with their resident models,
and the options that place helpers and forward credentials to other nodes."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..job.spec import JobSpec
from ..model.denoiser import Acceleration
from .scheduler import ATTEMPTS
from .worker import FluxWorker


FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE", "HF_TOKEN", "HF_HOME", "HF_HUB_OFFLINE",
                 "HF_ENDPOINT")


class ClusterUnreachable(RuntimeError):
    """``cluster.address`` (or ``RAY_ADDRESS``) does not answer; one line naming it."""


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, Ray Client) answers
# with a SETTINGS frame of its own (frame type 4, the fourth byte of its 9-byte header).
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_cluster(address: str | None, timeout: float) -> None:
    """Fail within ``timeout`` seconds, naming the address, when the cluster to connect to does not
    answer, or answers but is not Ray: ``ray.init`` would retry for ever. A TCP connection to its
    host and port, then gRPC's HTTP/2 greeting (skipped under RAY_USE_TLS, which wraps it in TLS);
    ``auto``, ``local`` and no address (an embedded Ray) need no check."""
    import socket

    address = address or os.environ.get("RAY_ADDRESS") or None
    found = re.match(r"^(?:[a-z]+://)?\[?([^\]/]+?)\]?:(\d+)(?:/.*)?$", address or "")
    if found is None:
        return
    host, port = found.group(1), int(found.group(2))
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            conn.sendall(HTTP2_HELLO)
            header = b""
            while len(header) < 9 and (chunk := conn.recv(9 - len(header))):
                header += chunk
    except OSError as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterUnreachable(f"cluster.address {address}: cannot reach a Ray cluster there ({reason})") from None
    if len(header) < 9 or header[3] != 4:
        raise ClusterUnreachable(f"cluster.address {address}: something answers there, but not a Ray cluster "
                                 "(no gRPC greeting)")


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Token authentication is enabled for this Ray cluster")


def connect(address: str | None) -> bool:
    """Connect to ``cluster.address``, else ``RAY_ADDRESS``, else start an embedded local Ray.
    Returns True when this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
        # Ray 2.60 announces on every new local cluster that it turned token authentication on: true,
        # wanted (the cluster is this user's), and nothing a user can act on. Its other lines stay.
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_quiet_token_notice)
    import signal
    import threading

    own = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    ray.init(address=address, **kwargs)
    if callable(own):  # Ray installs its own SIGTERM handler (a stack dump, exit 1); the caller's stays
        signal.signal(signal.SIGTERM, own)
    return True


@dataclass
class WorkerPool:
    """FluxWorker actors, one resident model each; kept across renders by long-lived callers."""

    model_spec: Any
    size: int
    device: str | None = None  # None: the GPU Ray gives the worker, else the CPU
    offload: bool = False
    acceleration: Acceleration = Acceleration()
    cpu_threads: int | None = None  # torch threads of a CPU worker; None: the cores shared out
    write_queue: int = 8  # frames a worker may hand to its store writer before it waits (0: write in line)
    workers: list[Any] = field(default_factory=list)

    @classmethod
    def for_spec(cls, spec: JobSpec, size: int) -> "WorkerPool":
        """``size`` workers set up as the spec's ``model`` and ``cluster`` say (not started)."""
        return cls(spec.model, size, acceleration=Acceleration.of(spec.cluster), cpu_threads=spec.cluster.cpu_threads,
                   write_queue=spec.cluster.write_queue)

    def start(self) -> None:
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            threads = 1
        else:  # CPU workers share the machine's cores
            cpus = max(1, int(resources.get("CPU", 1)))
            threads = self.cpu_threads or max(1, cpus // self.size)
            options = {"num_cpus": min(threads, cpus)}
        options.update(forwarded_env())
        actor = ray.remote(max_restarts=ATTEMPTS, max_task_retries=0)(FluxWorker)
        self.workers = [actor.options(**options).remote(self.model_spec, threads, self.device, self.offload,
                                                        self.acceleration, self.write_queue, log_libraries=True)
                        for _ in range(self.size)]
        try:
            ray.get([w.ready.remote() for w in self.workers])  # models loaded, or the load error surfaces here
        except Exception as exc:
            self.shutdown()
            raise RuntimeError(_model_error(exc)) from None

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


def _model_error(exc: BaseException) -> str:
    """The one line that matters from a worker that could not load its model."""
    import re

    text = str(exc)
    found = re.search(r"ModelError: (.+)", text)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"a worker could not start: {lines[-1] if lines else type(exc).__name__}"


def default_pool_size(spec: JobSpec, chains: int | None = None) -> int:
    """``cluster.num_workers``, else one worker per GPU (one on a machine without), at most ``chains``."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    wanted = spec.cluster.num_workers or (gpus if gpus else 1)
    return max(1, wanted if chains is None else min(wanted, chains))


def on_this_node() -> dict[str, Any]:
    """Options that pin a helper actor (the progress tracker) to the driver's node: a job loses
    its driver with that node anyway, and never loses the helper with another (a soft affinity
    is not enough: Ray spills a zero-CPU actor to any node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}


def forwarded_env() -> dict[str, Any]:
    """Storage and hub credentials, for actors and tasks that may land on other nodes."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {"runtime_env": {"env_vars": env}} if env else {}
