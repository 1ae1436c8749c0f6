"""A queue of jobs, rendered one after another on the same resident workers.

``deforum-ray render a.yaml b.yaml jobs/nightly/`` validates every spec first (the CLI: one bad spec
and nothing renders), then renders each job in turn. Workers stay up between jobs that share a
model and worker settings, so their models stay loaded; a job already done only reports its
video; a job that fails is recorded and the queue goes on. Ctrl-C or SIGTERM stops the queue
(every finished frame is kept; the same command resumes).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import first_line
from ..job.spec import JobSpec
from ..model.denoiser import Acceleration
from ..table import format_table
from .cluster import WorkerPool, check_cluster, connect, default_pool_size
from .driver import render


@dataclass(frozen=True)
class QueuedJob:
    label: str  # where the spec came from (its file), for the table
    spec: JobSpec


@dataclass(frozen=True)
class JobOutcome:
    label: str
    job: str
    clips: int
    frames: int  # rendered by this run
    seconds: float
    status: str  # rendered | already done | failed
    video: str | None
    reason: str | None = None


def pool_settings(spec: JobSpec) -> tuple[Any, ...]:
    """What a pool's workers are built from: two jobs that agree on it share the workers."""
    cluster = spec.cluster
    return (spec.model, Acceleration.of(cluster), cluster.cpu_threads, cluster.write_queue, cluster.num_workers)


def render_queue(jobs: Sequence[QueuedJob], *, progress: bool = True, fresh: bool = False) -> list[JobOutcome]:
    """Render ``jobs`` in order; one outcome each. Raises ClusterUnreachable before anything starts,
    else only KeyboardInterrupt (the queue stops)."""
    import ray

    outcomes: list[JobOutcome] = []
    pool: WorkerPool | None = None
    settings: tuple[Any, ...] | None = None
    if not jobs:
        return outcomes
    cluster = jobs[0].spec.cluster  # one for the whole queue (the CLI checks the jobs agree)
    check_cluster(cluster.address, cluster.connect_timeout)  # ray.init would wait for ever
    started_ray = connect(cluster.address)
    try:
        for job in jobs:
            spec = job.spec
            if pool is not None and pool_settings(spec) != settings:
                pool.shutdown()  # a different model or worker set-up: its GPU memory goes to the next pool
                pool = None
            if pool is None:
                pool, settings = WorkerPool.for_spec(spec, default_pool_size(spec)), pool_settings(spec)
            started = time.perf_counter()
            try:
                result = render(spec, pool=pool, progress=progress, fresh=fresh)
            except Exception as exc:  # the queue goes on; the table names the job and why
                outcomes.append(JobOutcome(job.label, spec.name, len(spec.clips), 0, time.perf_counter() - started,
                                           "failed", None, first_line(exc)))
                print(f"deforum-ray: {job.label}: render failed: {first_line(exc)}; the queue goes on", file=sys.stderr)
                continue
            if progress:
                print(result.summary(), file=sys.stderr)
            status = "rendered" if result.frames or result.final.encoded else "already done"
            outcomes.append(JobOutcome(job.label, spec.name, len(spec.clips), result.frames, result.seconds, status,
                                       result.video))
    finally:
        if pool is not None:
            pool.shutdown()
        if started_ray:
            ray.shutdown()
    return outcomes


def queue_table(outcomes: Sequence[JobOutcome]) -> str:
    header = ("job", "spec", "clips", "frames", "seconds", "frames/s", "status", "video")
    rows = [(o.job, o.label, str(o.clips), str(o.frames), f"{o.seconds:.1f}",
             f"{o.frames / o.seconds:.2f}" if o.frames and o.seconds else "-",
             o.status if o.reason is None else f"failed: {o.reason}", o.video or "-") for o in outcomes]
    return "\n".join(format_table(header, rows, left=(0, 1, 6, 7)))
