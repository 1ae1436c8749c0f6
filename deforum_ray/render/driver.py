"""render(spec): the Ray driver. It reads top to bottom:

1. plan the job and check the output folder (a changed spec under the same name is refused);
2. find where every chain stands in the store (finished chains are skipped, the rest resume); a
   clip with anchors first renders its anchor chain, then its segments all in parallel;
3. start a pool of FluxWorker actors (one per GPU, or CPU workers), each with a resident model;
4. embed every distinct prompt once, on one worker, and share the result through the object store;
5. hand chains to idle workers, up to ``chains_per_worker`` each to advance together; a chain whose
   worker dies or fails is retried from its checkpoint (``render.scheduler``);
6. the deliverables are encoded on a CPU while the chains render, each segment once its chain is
   done (``render.following``; after the render for latent interpolation, or when that stage was
   lost); print a summary.

Without a cluster, ``ray.init()`` starts an embedded local Ray; nothing else differs.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import yaml
from torch import Tensor

from ..errors import first_line
from ..post.finalize import FinalResult, made_outputs
from ..post.report import load_plotting, write_plots, write_report
from ..job.plan import ChainKind, ChainTask, RenderPlan, chain_tasks, format_plan, pixel_tree, plan, tree_diff
from ..job.spec import JobSpec, spec_to_dict, spec_to_yaml
from ..store import RenderStore, job_folders
from ..table import format_table
from .cluster import WorkerPool, check_cluster, connect, default_pool_size, forwarded_env, on_this_node
from .following import StageDuringRender, follows
from .resume import chain_standing, find_resume_point
from .progress import Progress, final_task
from .scheduler import (ATTEMPTS, AnchorsReady, Batch, ChainDone, ChainScheduler, Event, Failed, Retry,
                        WorkerGone)
from .start import StartClock
from .worker import ChainJob, ChainReport

_drawing = ThreadPoolExecutor(1, thread_name_prefix="page-plots")  # the job's page's plots, beside the final stage
FrameCallback = Callable[[int, int, Tensor | None], Any]  # (frames done in the job, total frames, latent)


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

    def summary(self) -> str:
        """What a person reads at the end (the CLI, a queue and the API print it): each chain's
        table, the deliverables, the job's page."""
        lines = [summary_table(self.reports)] if self.reports else []
        lines.append(final_lines(self.final))
        if self.report:
            lines.append(f"report {self.report}")
        return "\n".join(lines)


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
    page: Future | None = None
    try:
        final: FinalResult | None = None
        plots: Future | None = None
        if todo:
            _drawing.submit(load_plotting)  # matplotlib's import, off the tail
            pending = [*todo, *(task for tasks in waiting.values() for task in tasks)]
            stage = StageDuringRender(store, render_plan, spec, pending) if follows(spec) else None
            try:
                reports = _run_chains(spec, render_plan, store, todo, waiting, resumed, pool, progress, callback, fresh,
                                      clock, stage)
                if stage is not None:  # the run log is complete: the page's plots are drawn while the video ends
                    plots = _drawing.submit(write_plots, store)
                    final = stage.finish(progress)
            except JobFailed:
                page_of(store, progress)  # the morning's look at a failed job: its problems, what finished
                raise
            finally:
                if stage is not None:
                    stage.stop()
        final = final or made_outputs(store, render_plan, spec)  # a finished job starts no Ray at all
        if final is None:
            started_ray = connect(spec.cluster.address) or started_ray
            final = final_stage(store, render_plan, spec, pool, progress)
        page = _drawing.submit(page_of, store, progress, plots)  # written while Ray shuts down
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    seconds = time.perf_counter() - started
    report = page.result()
    frames = sum(r.frames_rendered for r in reports if r.kind is not ChainKind.ANCHORS)
    resumed = render_plan.total_frames - frames  # every chain is done: the rest was in the store
    return RenderResult(store.url(), final.video, final, frames, resumed, seconds, reports, report)


def page_of(store: RenderStore, progress: bool, plots: Future | None = None) -> str | None:
    """Write the job's page (``post.report``; ``plots``: its plots being drawn already); a page
    that cannot be written is a warning, never a failed render."""
    try:
        drawn = plots.result() if plots is not None and plots.exception() is None else None  # else drawn again
        return write_report(store, drawn)
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


def final_lines(final: FinalResult) -> str:
    what = "encoded" if final.encoded else "already made, nothing changed"
    lines = [f"video {final.video}: {final.frames} frames at {final.fps:g} fps ({what})"]
    lines += [f"  clip {name}: {path}" for name, path in final.clip_videos.items()]
    lines += [f"  contact sheet {name}: {path}" for name, path in final.contact_sheets.items()]
    return "\n".join(lines)


def _run_chains(spec: JobSpec, render_plan: RenderPlan, store: RenderStore, todo: list[ChainTask],
                waiting: dict[str, list[ChainTask]], resumed: int, pool: WorkerPool | None, progress: bool,
                callback: FrameCallback | None, fresh: bool, clock: StartClock,
                stage: StageDuringRender | None = None) -> tuple[ChainReport, ...]:
    """Hand chains to idle workers, up to ``chains_per_worker`` at a time, until all are done.

    A clip's segments wait in ``waiting`` until its anchor chain is done. A chain that fails is
    retried from its checkpoint; one that fails ATTEMPTS times fails the job once the others finish
    (the bookkeeping: :class:`~.scheduler.ChainScheduler`). ``stage``, the final stage made while
    the job renders, starts once the workers are up and hears of every chain done."""
    import ray
    from ray.exceptions import RayTaskError
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
    if stage is not None:
        stage.start()

    def submit(worker: int, batch: Batch) -> Any:
        jobs = [ChainJob(task, clips[task.clip], spec.width, spec.height, store.uri, dict(spec.output.storage_options),
                         spec.cluster.checkpoint_every, fresh and attempt == 1,  # retries resume
                         send_latents=callback is not None) for task, attempt in batch]
        return pool.workers[worker].render.remote(jobs, embeddings, tracker)

    def ready(worker: int) -> Any:
        return pool.workers[worker].ready.remote()

    chains = ChainScheduler.of(todo, waiting, len(pool.workers), spec.cluster.chains_per_worker)
    first = FirstFrame(clock, store, spec.cluster.compile, clock.workers, say=progress)
    done = resumed
    try:
        with tqdm(total=render_plan.total_frames, initial=resumed, unit="frame", disable=not progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            while chains.busy:
                chains.dispatch(submit)
                finished, _ = ray.wait(chains.calls(), num_returns=1, timeout=0.25)
                done = _drain(tracker, bar, callback, done, render_plan.total_frames)
                first.watch(bar, done > resumed)
                for call in finished:
                    for event in _collect(chains, call, ready):
                        _report(event, store, bar)
                        if isinstance(event, ChainDone) and stage is not None:
                            stage.chain_done(event.task)
                if chains.stuck:
                    raise JobFailed(f"no worker left to render {chains.queued[0][0].label} (every worker is gone)")
            # Workers report frames asynchronously: the last reports may land after their task returned.
            expected = resumed + sum(r.frames_rendered for r in chains.reports if r.kind is not ChainKind.ANCHORS)
            deadline = time.monotonic() + 10.0
            while done < expected and time.monotonic() < deadline:
                done = _drain(tracker, bar, callback, done, render_plan.total_frames)
                time.sleep(0.02)
            first.watch(bar, done > resumed)
    finally:
        ray.kill(tracker)  # a long-lived caller (the API, a queue) renders many jobs on one Ray
        if own_pool:
            pool.shutdown()
    if chains.failures:
        raise JobFailed(f"{chains.failures[0]} (after {ATTEMPTS} attempts; the other clips are complete in the store)")
    return tuple(chains.reports)


def _collect(chains: ChainScheduler, call: Any, ready: Callable[[int], Any]) -> list[Event]:
    """What a finished call means for the chains: Ray's outcomes turned into the scheduler's events."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

    if chains.restart_of(call) is not None:
        try:
            ray.get(call)
            chains.restarted(call)
        except ActorUnavailableError:  # still restarting: ask again in a moment
            time.sleep(0.1)
            chains.still_restarting(call, ready)
        except RayActorError:  # out of restarts
            return chains.gone(call)
        return []
    batch, _ = chains.running[call]
    try:
        return chains.finished(call, ray.get(call))
    except RayTaskError as exc:
        return chains.finished(call, [exc] * len(batch))
    except RayActorError as exc:  # the worker died: every chain it had is retried
        return chains.worker_lost(call, exc, ready)


def _report(event: Event, store: RenderStore, bar: Any) -> None:
    """An event's line for the user, and the problems kept with the job."""
    if isinstance(event, AnchorsReady):
        bar.write(f"clip {event.task.clip}: {len(event.task.anchors)} anchors ready; {event.queued} chains queued",
                  file=sys.stderr)
    elif isinstance(event, ChainDone):
        outcome = event.report
        rate = outcome.frames_rendered / outcome.seconds if outcome.seconds else 0.0
        together = f", {outcome.advanced_together} chains together" if outcome.advanced_together > 1 else ""
        bar.write(f"clip {event.task.label}: {outcome.frames_rendered} frames in {outcome.seconds:.1f} s "
                  f"({rate:.1f} frames/s) on {outcome.worker}{together}", file=sys.stderr)
    elif isinstance(event, Retry):
        bar.write(f"retrying {event.task.label} (attempt {event.attempt + 1} of {ATTEMPTS}): {event.reason}",
                  file=sys.stderr)
        store.event("retry", _where(event.task), f"attempt {event.attempt} of {ATTEMPTS} failed: {event.reason}")
    elif isinstance(event, Failed):
        bar.write(f"failed: {event.reason}", file=sys.stderr)
        store.event("failed", _where(event.task), f"after {ATTEMPTS} attempts: {event.reason}")
    elif isinstance(event, WorkerGone):
        bar.write(f"worker {event.index} is gone for good", file=sys.stderr)


def _where(task: ChainTask) -> str:
    return f"anchors/{task.clip}" if task.kind is ChainKind.ANCHORS else f"segments/{task.clip}/{task.segments[0].index}"


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


def _drain(tracker: Any, bar: Any, callback: FrameCallback | None, done: int, total: int) -> int:
    import ray

    for _clip, _frame, latent in ray.get(tracker.drain.remote()):
        done += 1
        bar.update(1)
        if callback is not None:
            callback(done - 1, total, latent)
    return done


def summary_table(reports: tuple[ChainReport, ...]) -> str:
    header = ("chain", "frames", "diffused", "seconds", "frames/s", "together", "worker", "attempt")
    rows = [(r.label, f"{r.frames_rendered}{' anchors' if r.kind is ChainKind.ANCHORS else ''}", str(r.diffused),
             f"{r.seconds:.1f}", f"{r.frames_rendered / r.seconds:.1f}" if r.seconds else "-",
             str(r.advanced_together), r.worker, f"{r.attempt} (retried)" if r.attempt > 1 else "1")
            for r in reports]
    return "\n".join(format_table(header, rows, left=(0, 6, 7)))
