"""render(spec): the Ray driver. It reads top to bottom:

1. plan the job and check the output folder (a changed spec under the same name is refused);
2. find where every chain stands in the store (finished chains are skipped, the rest resume); a
   clip with anchors first renders its anchor chain, then its segments all in parallel;
3. start a pool of FluxWorker actors (one per GPU, or CPU workers), each with a resident model;
4. embed every distinct prompt once, on one worker, and share the result through the object store;
5. hand chains to idle workers, up to ``chains_per_worker`` each to advance together; a chain whose
   worker dies or fails is retried from its checkpoint;
6. once every chain is in the store, one Ray CPU task encodes the deliverables; print a summary.

Without a cluster, ``ray.init()`` starts an embedded local Ray; nothing else differs.
"""

from __future__ import annotations

import logging
import re
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import yaml
from torch import Tensor

from ..errors import first_line
from ..post.finalize import FinalResult, made_outputs
from ..post.report import write_report
from ..job.plan import ChainKind, ChainTask, RenderPlan, chain_tasks, format_plan, pixel_tree, plan, tree_diff
from ..job.spec import JobSpec, spec_to_dict, spec_to_yaml
from ..model.denoiser import Acceleration
from ..store import RenderStore, job_folders
from ..table import format_table
from .resume import chain_standing, find_resume_point
from .progress import Progress, final_task
from .start import StartClock
from .worker import ChainError, ChainJob, ChainReport, FluxWorker

FrameCallback = Callable[[int, int, Tensor | None], Any]  # (frames done in the job, total frames, latent)
ATTEMPTS = 3  # a chain that fails this many times fails the job
FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE", "HF_TOKEN", "HF_HOME", "HF_HUB_OFFLINE",
                 "HF_ENDPOINT")


class JobConflict(ValueError):
    """The output already holds this job name rendered from a different spec (exit 2)."""


class JobFailed(RuntimeError):
    """A chain failed on every attempt; the other chains finished and are in the store."""


@dataclass(frozen=True)
class RenderResult:
    output_dir: str
    video: str
    final: FinalResult
    frames: int  # frames rendered by this run
    resumed: int  # frames found finished in the store
    seconds: float
    reports: tuple[ChainReport, ...] = ()
    report: str | None = None  # the job's page (report.html), None if it could not be written

    @property
    def retried(self) -> tuple[str, ...]:
        """The chains that finished on a later attempt (their worker died, or their node was lost)."""
        return tuple(r.label for r in self.reports if r.attempt > 1)


def manifest(render_plan: RenderPlan) -> dict[str, Any]:
    return {
        "job": render_plan.job_name,
        "job_id": render_plan.job_id,
        "clips": [
            {"name": c.name, "num_frames": c.num_frames, "passes": c.passes, "anchors": list(c.anchors),
             "segments": [{"index": s.index, "start": s.start, "stop": s.stop} for s in c.segments]}
            for c in render_plan.clips
        ],
    }


def output_store(spec: JobSpec) -> RenderStore:
    return RenderStore(spec.output.uri, spec.output.storage_options)


def check_output(spec: JobSpec, render_plan: RenderPlan, fresh: bool) -> None:
    """Refuse to render a changed spec under a job name that already has a render here."""
    if fresh:
        return
    output = output_store(spec)
    ours = f"{render_plan.job_name}-{render_plan.job_id}"
    others = [f for f in job_folders(output, render_plan.job_name) if f != ours]
    if not others:
        return
    earlier = output.child(others[-1])
    stored = earlier.get("spec.yaml")
    differs = ""
    if stored is not None:
        paths = tree_diff(pixel_tree(yaml.safe_load(stored)), pixel_tree(spec_to_dict(spec)))
        differs = f" ({', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''} differ)"
    raise JobConflict(
        f"output.uri: job {render_plan.job_name!r} was already rendered here from a different spec: "
        f"{earlier.url()}{differs}. This spec would render into {ours}; run with --fresh to render it "
        f"anyway (the earlier render is kept), or give the job another name."
    )


# ---------------------------------------------------------------------------------------------
# Ray


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


# ---------------------------------------------------------------------------------------------
# render


def render(spec: JobSpec, *, pool: WorkerPool | None = None, progress: bool = True,
           callback: FrameCallback | None = None, fresh: bool = False) -> RenderResult:
    """Render a validated job into ``<output.uri>/<name>-<job_id>/`` and encode its video.

    Running it again resumes: finished frames are kept, unfinished chains continue from their
    last good checkpoint. ``fresh`` renders everything again.
    """
    started = time.perf_counter()
    clock = StartClock(sys.stderr if progress else None)
    render_plan = plan(spec)
    check_output(spec, render_plan, fresh)
    check_cluster(spec.cluster.address, spec.cluster.connect_timeout)  # before anything is written
    store = output_store(spec).child(f"{render_plan.job_name}-{render_plan.job_id}")
    store.write_text("spec.yaml", spec_to_yaml(spec))
    store.write_json("manifest.json", manifest(render_plan))
    store.write_text("plan.txt", format_plan(render_plan, spec))  # for the job's page

    stages = [chain_tasks(clip) for clip in render_plan.clips]  # (anchor chain or None, frame chains)
    todo: list[ChainTask] = []
    waiting: dict[str, list[ChainTask]] = {}  # a clip's segments, until its anchors are in the store
    resumed = 0  # an estimate from listings, for the progress bar; made exact from the reports
    for anchors, frame_tasks in stages:
        pending = []
        for task in frame_tasks:
            finished, done = chain_standing(store, task, fresh)
            resumed += done
            if not finished:
                pending.append(task)
        if anchors is not None and pending and (fresh or find_resume_point(store, anchors).state is not None):
            todo.append(anchors)
            waiting[anchors.clip] = pending
        else:
            todo += pending
    reports: tuple[ChainReport, ...] = ()
    started_ray = False
    if todo:
        with clock.phase("ray", "connecting" if spec.cluster.address or os.environ.get("RAY_ADDRESS") else "starting"):
            started_ray = connect(spec.cluster.address)
    try:
        if todo:
            try:
                reports = _run_chains(spec, render_plan, store, todo, waiting, resumed, pool, progress, callback, fresh,
                                      clock)
            except JobFailed:
                page_of(store, progress)  # the morning's look at a failed job: its problems, what finished
                raise
        final = made_outputs(store, render_plan, spec)  # a finished job starts no Ray at all
        if final is None:
            started_ray = connect(spec.cluster.address) or started_ray
            final = final_stage(store, render_plan, spec, pool, progress)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    seconds = time.perf_counter() - started
    if progress and reports:
        print(summary_table(reports), file=sys.stderr)
    report = page_of(store, progress)
    if progress:
        print(final_lines(final) + (f"\nreport {report}" if report else ""), file=sys.stderr)
    frames = sum(r.frames_rendered for r in reports if r.kind is not ChainKind.ANCHORS)
    resumed = render_plan.total_frames - frames  # every chain is done: the rest was in the store
    return RenderResult(store.url(), final.video, final, frames, resumed, seconds, reports, report)


def page_of(store: RenderStore, progress: bool) -> str | None:
    """Write the job's page (``post.report``); a page that cannot be written is a warning, never
    a failed render."""
    try:
        return write_report(store)
    except Exception as exc:
        if progress:
            print(f"warning: the job's page was not written: {first_line(exc)}", file=sys.stderr)
        return None


def final_stage(store: RenderStore, render_plan: RenderPlan, spec: JobSpec, pool: WorkerPool | None,
                progress: bool = True) -> FinalResult:
    """Stage 6 as one Ray CPU task: it reads the frames from the store wherever a CPU is free.
    Latent interpolation borrows a worker to decode: the caller's pool's, else one started here."""
    import ray
    from ray.exceptions import RayTaskError
    from tqdm import tqdm

    own_pool = None
    decoder_worker = None
    if spec.post.interpolation_method == "latent" and spec.post.interpolation > 1:
        if pool is None:
            pool = own_pool = WorkerPool(spec.model, 1, cpu_threads=spec.cluster.cpu_threads)
        if not pool.workers:
            pool.start()
        decoder_worker = pool.workers[0]
    # A caller's resident CPU pool may hold every CPU; the encode must not queue behind it forever.
    cpus = 1 if ray.available_resources().get("CPU", 0) >= 1 else 0
    task = ray.remote(final_task).options(num_cpus=cpus, name="final-stage", **forwarded_env())
    tracker = ray.remote(num_cpus=0)(Progress).options(**on_this_node()).remote()
    bar = tqdm(total=render_plan.video_frames, desc="encode", unit="frame", disable=not progress, file=sys.stderr)
    try:
        encoded = task.remote(store, render_plan, spec, decoder_worker, tracker)
        while not ray.wait([encoded], timeout=0.25)[0]:
            for _name, count, _ in ray.get(tracker.drain.remote()):
                bar.update(max(0, count - bar.n))
        result = ray.get(encoded)
        bar.update(max(0, result.frames - bar.n) if result.encoded else 0)
        return result
    except RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, Exception) else None
        if cause is None:
            raise
        raise cause from None  # the stage's own one-line error, not Ray's traceback wrapper
    finally:
        bar.close()
        ray.kill(tracker)
        if own_pool is not None:
            own_pool.shutdown()


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


def final_lines(final: FinalResult) -> str:
    what = "encoded" if final.encoded else "already made, nothing changed"
    lines = [f"video {final.video}: {final.frames} frames at {final.fps:g} fps ({what})"]
    lines += [f"  clip {name}: {path}" for name, path in final.clip_videos.items()]
    lines += [f"  contact sheet {name}: {path}" for name, path in final.contact_sheets.items()]
    return "\n".join(lines)


def _run_chains(spec: JobSpec, render_plan: RenderPlan, store: RenderStore, todo: list[ChainTask],
                waiting: dict[str, list[ChainTask]], resumed: int, pool: WorkerPool | None, progress: bool,
                callback: FrameCallback | None, fresh: bool, clock: StartClock) -> tuple[ChainReport, ...]:
    """Hand chains to idle workers, up to ``chains_per_worker`` at a time, until all are done.

    A clip's segments wait in ``waiting`` until its anchor chain is done. A chain that fails is
    retried from its checkpoint; one that fails ATTEMPTS times fails the job once the others finish."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
    from tqdm import tqdm

    own_pool = pool is None
    per_worker = spec.cluster.chains_per_worker
    if pool is None:
        parallel = sum(len(tasks) for tasks in waiting.values()) + len(todo) - len(waiting)
        pool = WorkerPool.for_spec(spec, default_pool_size(spec, -(-parallel // per_worker)))
    if not pool.workers:
        workers = f"{pool.size} worker{'s' if pool.size > 1 else ''}"
        with clock.phase("workers", f"loading {spec.model.name} on {workers}"):
            pool.start()
        clock.workers = ray.get([w.start_facts.remote() for w in pool.workers])
    clips = {clip.name: clip for clip in spec.clips}
    texts = list(dict.fromkeys(t for task in todo for t in clips[task.clip].prompts.values()))
    # Once per distinct prompt, shared by reference; put by the driver, so that the object lives on
    # its node and outlives the worker (and the node) that computed it.
    with clock.phase("embed", f"{len(texts)} prompt{'s' if len(texts) > 1 else ''}"):
        embeddings = ray.put(ray.get(pool.workers[0].embed.remote(texts)))
    if own_pool:
        with clock.phase("place", "the transformer onto its device"):
            ray.get([w.release_text_encoders.remote() for w in pool.workers])
    depths = sorted({clips[t.clip].motion.depth for t in todo if clips[t.clip].motion.mode == "3d"} - {"none"})
    if depths:
        try:
            with clock.phase("depth", ", ".join(depths)):
                ray.get([w.load_depth.remote(depths) for w in pool.workers])
        except RayTaskError as exc:  # its one line (a depth model not fetched), not Ray's traceback
            raise RuntimeError(first_line(exc.cause if isinstance(exc.cause, Exception) else exc)) from None

    tracker = ray.remote(num_cpus=0)(Progress).options(**on_this_node()).remote()

    def job(task: ChainTask, attempt: int) -> ChainJob:
        return ChainJob(task, clips[task.clip], spec.width, spec.height, store.uri, dict(spec.output.storage_options),
                        spec.cluster.checkpoint_every, fresh and attempt == 1,  # retries resume
                        send_latents=callback is not None)

    queue = deque((task, 1) for task in todo)
    idle = deque(range(len(pool.workers)))
    running: dict[Any, tuple[list[tuple[ChainTask, int]], int]] = {}
    # A worker that died is idle again only once Ray has restarted it: on a lost node that may
    # take long, or never come (nowhere else to place it), so its chains go to the others meanwhile.
    restarting: dict[Any, int] = {}  # worker.ready() call -> worker index
    reports: list[ChainReport] = []
    failures: list[str] = []
    done = resumed

    def settle(task: ChainTask, attempt: int, outcome: ChainReport | BaseException, bar: Any) -> None:
        if isinstance(outcome, ChainReport):
            reports.append(replace(outcome, attempt=attempt))
            if task.kind is ChainKind.ANCHORS:
                queue.extend((segment, 1) for segment in waiting.pop(task.clip, []))
                bar.write(f"clip {task.clip}: {len(task.anchors)} anchors ready; {len(queue)} chains queued", file=sys.stderr)
            else:
                rate = outcome.frames_rendered / outcome.seconds if outcome.seconds else 0.0
                together = f", {outcome.advanced_together} chains together" if outcome.advanced_together > 1 else ""
                bar.write(f"clip {task.label}: {outcome.frames_rendered} frames in {outcome.seconds:.1f} s "
                          f"({rate:.1f} frames/s) on {outcome.worker}{together}", file=sys.stderr)
            return
        reason = _reason(outcome, task)
        where = f"anchors/{task.clip}" if task.kind is ChainKind.ANCHORS else f"segments/{task.clip}/{task.segments[0].index}"
        if attempt < ATTEMPTS:
            bar.write(f"retrying {task.label} (attempt {attempt + 1} of {ATTEMPTS}): {reason}", file=sys.stderr)
            store.event("retry", where, f"attempt {attempt} of {ATTEMPTS} failed: {reason}")
            queue.append((task, attempt + 1))
            return
        bar.write(f"failed: {reason}", file=sys.stderr)
        store.event("failed", where, f"after {ATTEMPTS} attempts: {reason}")
        failures.append(reason)
        for segment in waiting.pop(task.clip, []) if task.kind is ChainKind.ANCHORS else []:
            failures.append(f"{segment.label}: not rendered, its anchors failed")

    first = FirstFrame(clock, store, spec.cluster.compile, clock.workers, say=progress)
    try:
        with tqdm(total=render_plan.total_frames, initial=resumed, unit="frame", disable=not progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            while queue or running:
                while queue and idle:
                    batch = next_batch(queue, per_worker, len(idle))
                    index = idle.popleft()
                    call = pool.workers[index].render.remote([job(t, a) for t, a in batch], embeddings, tracker)
                    running[call] = (batch, index)
                ready, _ = ray.wait([*running, *restarting], num_returns=1, timeout=0.25)
                done = _drain(tracker, bar, callback, done, render_plan.total_frames)
                first.watch(bar, done > resumed)
                for ref in ready:
                    if ref in restarting:
                        index = restarting.pop(ref)
                        try:
                            ray.get(ref)
                            idle.append(index)
                        except ActorUnavailableError:  # still restarting: ask again in a moment
                            time.sleep(0.1)
                            restarting[pool.workers[index].ready.remote()] = index
                        except RayActorError:  # out of restarts: the others carry on without it
                            bar.write(f"worker {index} is gone for good", file=sys.stderr)
                        continue
                    batch, index = running.pop(ref)
                    try:
                        outcomes: list[Any] = ray.get(ref)
                        idle.append(index)
                    except RayTaskError as exc:
                        outcomes = [exc] * len(batch)
                        idle.append(index)
                    except RayActorError as exc:  # the worker died: every chain it had is retried
                        outcomes = [exc] * len(batch)
                        restarting[pool.workers[index].ready.remote()] = index
                    for (task, attempt), outcome in zip(batch, outcomes):
                        settle(task, attempt, outcome, bar)
                if queue and not idle and not running and not restarting:
                    raise JobFailed(f"no worker left to render {queue[0][0].label} (every worker is gone)")
            # Workers report frames asynchronously: the last reports may land after their task returned.
            expected = resumed + sum(r.frames_rendered for r in reports if r.kind is not ChainKind.ANCHORS)
            deadline = time.monotonic() + 10.0
            while done < expected and time.monotonic() < deadline:
                done = _drain(tracker, bar, callback, done, render_plan.total_frames)
                time.sleep(0.02)
            first.watch(bar, done > resumed)
    finally:
        ray.kill(tracker)  # a long-lived caller (the API, a queue) renders many jobs on one Ray
        if own_pool:
            pool.shutdown()
    if failures:
        raise JobFailed(f"{failures[0]} (after {ATTEMPTS} attempts; the other clips are complete in the store)")
    return tuple(reports)


class FirstFrame:
    """The wait for a run's first frame (the first transformer call compiles, or reads the compile
    cache): named on the progress bar while it lasts, then the start is recorded with the job."""

    def __init__(self, clock: StartClock, store: RenderStore, compiled: bool, workers: list[dict[str, Any]],
                 say: bool = True):
        self.clock, self.store, self.say = clock, store, say
        self.began = time.perf_counter()
        caches = {w.get("compile_cache") for w in workers} - {None}
        cache = f", {'/'.join(sorted(caches))} cache" if caches else ""
        self.what = f"first frame (compiling{cache})" if compiled else "first frame"
        self.seen = False

    def watch(self, bar: Any, arrived: bool) -> None:
        if self.seen:
            return
        seconds = time.perf_counter() - self.began
        if not arrived:
            bar.set_description_str(f"{self.what} {seconds:.0f} s", refresh=False)
            return
        self.seen = True
        bar.set_description_str("", refresh=False)
        self.clock.add(self.what, seconds)
        try:
            self.store.put_start(self.clock.record())
        except Exception as exc:  # the record is for the page; a store hiccup here is no failed render
            bar.write(f"warning: the start was not recorded: {first_line(exc)}", file=sys.stderr)
        if self.say:
            bar.write(self.clock.line(), file=sys.stderr)


def next_batch(queue: deque[tuple[ChainTask, int]], per_worker: int, idle: int) -> list[tuple[ChainTask, int]]:
    """Take the chains for the next of ``idle`` idle workers off ``queue``.

    An anchor chain goes first and alone: its clip's segments all wait for it, and a call returns
    only when every chain in it is done. The others are spread evenly over the idle workers, up to
    ``per_worker`` each: a worker's time per frame hardly grows with its batch (a compiled one pads
    every call to its full batch), so two half calls finish in about half the time of one full call."""
    anchors = next((item for item in queue if item[0].kind is ChainKind.ANCHORS), None)
    if anchors is not None:
        queue.remove(anchors)
        return [anchors]
    return [queue.popleft() for _ in range(min(per_worker, -(-len(queue) // max(1, idle))))]


def _drain(tracker: Any, bar: Any, callback: FrameCallback | None, done: int, total: int) -> int:
    import ray

    for _clip, _frame, latent in ray.get(tracker.drain.remote()):
        done += 1
        bar.update(1)
        if callback is not None:
            callback(done - 1, total, latent)
    return done


def _reason(exc: BaseException, task: ChainTask) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ChainError):
        return str(cause)
    if isinstance(exc, ChainError):
        return str(exc)
    return f"{task.label}: worker failed: {first_line(exc)}"


def summary_table(reports: tuple[ChainReport, ...]) -> str:
    header = ("chain", "frames", "diffused", "seconds", "frames/s", "together", "worker", "attempt")
    rows = [(r.label, f"{r.frames_rendered}{' anchors' if r.kind is ChainKind.ANCHORS else ''}", str(r.diffused),
             f"{r.seconds:.1f}", f"{r.frames_rendered / r.seconds:.1f}" if r.seconds else "-",
             str(r.advanced_together), r.worker, f"{r.attempt} (retried)" if r.attempt > 1 else "1")
            for r in reports]
    return "\n".join(format_table(header, rows, left=(0, 6, 7)))
