"""render(spec): the Ray driver. It reads top to bottom:

1. plan the job and check the output folder (a changed spec under the same name is refused);
2. find where every chain stands in the store (finished chains are skipped, the rest resume);
3. start a pool of FluxWorker actors (one per GPU, or CPU workers), each with a resident model;
4. embed every distinct prompt once, on one worker, and share the result through the object store;
5. hand chains to idle workers; a chain whose worker dies or fails is retried from its checkpoint;
6. once every chain is in the store, encode the video (CPU) and print a summary.

Without a cluster, ``ray.init()`` starts an embedded local Ray; nothing else differs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml
from torch import Tensor

from .errors import first_line
from .finalize import finalize
from .loop import LoopState
from .plan import RenderPlan, pixel_tree, plan, tree_diff
from .spec import JobSpec, spec_to_dict, spec_to_yaml
from .store import RenderStore, job_folders
from .table import format_table
from .worker import ChainError, ChainJob, ChainReport, ChainTask, FluxWorker, Progress, find_resume_point

FrameCallback = Callable[[int, int, Tensor | None], Any]  # (frames done in the job, total frames, latent)
ATTEMPTS = 3  # a chain that fails this many times fails the job
FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE", "HF_TOKEN", "HF_HOME", "HF_HUB_OFFLINE")


class JobConflict(ValueError):
    """The output already holds this job name rendered from a different spec (exit 2)."""


class JobFailed(RuntimeError):
    """A chain failed on every attempt; the other chains finished and are in the store."""


@dataclass(frozen=True)
class RenderResult:
    output_dir: str
    video: str
    frames: int  # frames rendered by this run
    resumed: int  # frames found finished in the store
    seconds: float
    reports: tuple[ChainReport, ...] = ()


def manifest(render_plan: RenderPlan) -> dict[str, Any]:
    return {
        "job": render_plan.job_name,
        "job_id": render_plan.job_id,
        "clips": [
            {"name": c.name, "num_frames": c.num_frames, "passes": c.passes,
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
    ray.init(address=address, **kwargs)
    return True


@dataclass
class WorkerPool:
    """FluxWorker actors, one resident model each; kept across renders by long-lived callers."""

    model_spec: Any
    size: int
    device: str | None = None  # None: the GPU Ray gives the worker, else the CPU
    offload: bool = False
    workers: list[Any] = field(default_factory=list)

    def start(self) -> None:
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            threads = 1
        else:  # CPU workers share the machine's cores
            threads = max(1, int(resources.get("CPU", 1)) // self.size)
            options = {"num_cpus": threads}
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        if env:
            options["runtime_env"] = {"env_vars": env}  # remote nodes need storage and hub credentials too
        actor = ray.remote(max_restarts=ATTEMPTS, max_task_retries=0)(FluxWorker)
        self.workers = [actor.options(**options).remote(self.model_spec, threads, self.device, self.offload)
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


def default_pool_size(spec: JobSpec, chains: int) -> int:
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    wanted = spec.cluster.num_workers or (gpus if gpus else 1)
    return max(1, min(wanted, chains))


# ---------------------------------------------------------------------------------------------
# render


def render(spec: JobSpec, *, pool: WorkerPool | None = None, progress: bool = True,
           callback: FrameCallback | None = None, fresh: bool = False) -> RenderResult:
    """Render a validated job into ``<output.uri>/<name>-<job_id>/`` and encode its video.

    Running it again resumes: finished frames are kept, unfinished chains continue from their
    last good checkpoint. ``fresh`` renders everything again.
    """
    started = time.perf_counter()
    render_plan = plan(spec)
    check_output(spec, render_plan, fresh)
    store = output_store(spec).child(f"{render_plan.job_name}-{render_plan.job_id}")
    store.write_text("spec.yaml", spec_to_yaml(spec))
    store.write_json("manifest.json", manifest(render_plan))

    tasks = [ChainTask(c.name, 0, c.num_frames, c.segments) for c in render_plan.clips]
    resumes = [find_resume_point(store, task, LoopState(), fresh) for task in tasks]
    todo = [task for task, resume in zip(tasks, resumes) if resume.state is not None]
    resumed = sum(r.frames_done for r in resumes)
    reports: tuple[ChainReport, ...] = ()
    if todo:
        started_ray = connect(spec.cluster.address)
        try:
            reports = _run_chains(spec, render_plan, store, todo, resumed, pool, progress, callback, fresh)
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    video = finalize(store, render_plan, spec)
    seconds = time.perf_counter() - started
    if progress and reports:
        print(summary_table(reports), file=sys.stderr)
    return RenderResult(store.url(), video, sum(r.frames_rendered for r in reports), resumed, seconds, reports)


def _run_chains(spec: JobSpec, render_plan: RenderPlan, store: RenderStore, todo: list[ChainTask], resumed: int,
                pool: WorkerPool | None, progress: bool, callback: FrameCallback | None,
                fresh: bool) -> tuple[ChainReport, ...]:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from tqdm import tqdm

    own_pool = pool is None
    if pool is None:
        pool = WorkerPool(spec.model, default_pool_size(spec, len(todo)))
    if not pool.workers:
        pool.start()
    clips = {clip.name: clip for clip in spec.clips}
    texts = list(dict.fromkeys(t for task in todo for t in clips[task.clip].prompts.values()))
    embeddings = pool.workers[0].embed.remote(texts)  # once per distinct prompt, shared by reference
    if own_pool:
        ray.get(embeddings)
        ray.get([w.release_text_encoders.remote() for w in pool.workers])

    tracker = ray.remote(num_cpus=0)(Progress).remote()
    jobs = {task.clip: ChainJob(task, clips[task.clip], spec.width, spec.height, store.uri,
                                dict(spec.output.storage_options), spec.cluster.checkpoint_every, fresh,
                                send_latents=callback is not None)
            for task in todo}
    queue = deque((task.clip, 1) for task in todo)
    idle = deque(range(len(pool.workers)))
    running: dict[Any, tuple[str, int, int]] = {}
    reports: list[ChainReport] = []
    failures: list[str] = []
    done = resumed
    try:
        with tqdm(total=render_plan.total_frames, initial=resumed, unit="frame", disable=not progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            while queue or running:
                while queue and idle:
                    clip, attempt = queue.popleft()
                    index = idle.popleft()
                    job = jobs[clip] if attempt == 1 else _not_fresh(jobs[clip])  # retries resume
                    running[pool.workers[index].render.remote(job, embeddings, tracker)] = (clip, attempt, index)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
                done = _drain(tracker, bar, callback, done, render_plan.total_frames)
                for ref in ready:
                    clip, attempt, index = running.pop(ref)
                    idle.append(index)  # a dead worker is restarted by Ray; calls to it wait for that
                    try:
                        report = ray.get(ref)
                    except (RayTaskError, RayActorError) as exc:
                        reason = _reason(exc, clip)
                        if attempt < ATTEMPTS:
                            bar.write(f"retrying clip {clip} (attempt {attempt + 1} of {ATTEMPTS}): {reason}")
                            queue.append((clip, attempt + 1))
                        else:
                            bar.write(f"failed: {reason}")
                            failures.append(reason)
                        continue
                    reports.append(report)
                    rate = report.frames_rendered / report.seconds if report.seconds else 0.0
                    bar.write(f"clip {report.clip}: {report.frames_rendered} frames in {report.seconds:.1f} s "
                              f"({rate:.1f} frames/s) on {report.worker}")
            # Workers report frames asynchronously: the last reports may land after their task returned.
            expected = resumed + sum(r.frames_rendered for r in reports)
            deadline = time.monotonic() + 10.0
            while done < expected and time.monotonic() < deadline:
                done = _drain(tracker, bar, callback, done, render_plan.total_frames)
                time.sleep(0.02)
    finally:
        if own_pool:
            pool.shutdown()
    if failures:
        raise JobFailed(f"{failures[0]} (after {ATTEMPTS} attempts; the other clips are complete in the store)")
    return tuple(reports)


def _drain(tracker: Any, bar: Any, callback: FrameCallback | None, done: int, total: int) -> int:
    import ray

    for _clip, _frame, latent in ray.get(tracker.drain.remote()):
        done += 1
        bar.update(1)
        if callback is not None:
            callback(done - 1, total, latent)
    return done


def _not_fresh(job: ChainJob) -> ChainJob:
    from dataclasses import replace

    return replace(job, fresh=False)


def _reason(exc: BaseException, clip: str) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ChainError):
        return str(cause)
    if isinstance(exc, ChainError):
        return str(exc)
    return f"clip {clip!r}: worker failed: {first_line(exc)}"


def summary_table(reports: tuple[ChainReport, ...]) -> str:
    header = ("clip", "frames", "seconds", "frames/s", "worker")
    rows = [(r.clip, str(r.frames_rendered), f"{r.seconds:.1f}",
             f"{r.frames_rendered / r.seconds:.1f}" if r.seconds else "-", r.worker) for r in reports]
    return "\n".join(format_table(header, rows, left=(0, 4)))
