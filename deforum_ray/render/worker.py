"""Rendering one chain of frames into the store, resumably.

A chain is a run of frames where frame n needs frame n-1: a whole clip, a clip's anchor chain,
or one segment between two anchors (DESIGN.md section 3). Frames are written as they come; every ``checkpoint_every`` frames the whole loop state is
checkpointed and the run log flushed; each segment gets a DONE marker when its last frame is in.
Resuming finds the first frame the store cannot vouch for and restarts from the newest good
checkpoint at or before it, so a resumed chain repeats at most ``checkpoint_every`` frames and
produces exactly the frames an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import first_line
from ..frame.loop import Chain, Lane, LoopState, SegmentEnds, advance, decode
from ..job.plan import ClipPlan, Segment
from ..store import RenderStore, worker_name


CLIP, ANCHORS, SEGMENT = "clip", "anchors", "segment"  # what a ChainTask renders


@dataclass(frozen=True)
class ChainTask:
    """One sequential chain of a clip: the whole clip, its anchor chain, or one anchored segment.

    ``clip`` and ``segment`` tasks write frames ``start ... stop - 1`` into the folders of
    ``segments``; an ``anchors`` task writes the loop state after each segment's first frame."""

    clip: str
    start: int
    stop: int
    segments: tuple[Segment, ...]
    kind: str = CLIP

    def segment_of(self, frame: int) -> int:
        for seg in self.segments:
            if seg.start <= frame < seg.stop:
                return seg.index
        raise ValueError(f"frame {frame} is in no segment of clip {self.clip!r}")

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    @property
    def anchors(self) -> tuple[int, ...]:
        return tuple(seg.start for seg in self.segments)

    @property
    def label(self) -> str:
        """How messages and tables name it: ``a``, ``a/anchors``, ``a/3``."""
        if self.kind == ANCHORS:
            return f"{self.clip}/anchors"
        return f"{self.clip}/{self.segments[0].index}" if self.kind == SEGMENT else self.clip


def chain_tasks(clip: ClipPlan) -> tuple[ChainTask | None, list[ChainTask]]:
    """(the anchor chain, if the clip has anchors; the chains that write its frames)."""
    if not clip.anchors:
        return None, [ChainTask(clip.name, 0, clip.num_frames, clip.segments)]
    anchors = ChainTask(clip.name, 0, clip.num_frames, clip.segments, ANCHORS)
    return anchors, [ChainTask(clip.name, seg.start, seg.stop, (seg,), SEGMENT) for seg in clip.segments]


@dataclass(frozen=True)
class ResumePoint:
    """Where a chain continues: ``state`` is None when nothing is left to render."""

    state: LoopState | None
    frames_done: int  # frames (anchors, for an anchor chain) before the resume point, already stored
    from_checkpoint: int | None


def find_resume_point(store: RenderStore, task: ChainTask, fresh: bool = False) -> ResumePoint:
    """The newest good checkpoint at or before the first frame the store cannot vouch for."""
    initial = LoopState(task.start)
    if task.kind == ANCHORS:
        return _anchor_resume_point(store, task, fresh)
    if fresh:
        return ResumePoint(initial, 0, None)
    if all(_done_by_listing(store, task.clip, seg) for seg in task.segments):
        return ResumePoint(None, task.num_frames, None)
    frames = range(task.start, task.stop)
    rels = [(store.frame_rel(task.clip, task.segment_of(n), n), store.latent_rel(task.clip, task.segment_of(n), n))
            for n in frames]
    fetched = store.get_many([rel for pair in rels for rel in pair])
    missing = next((n for n, pair in zip(frames, rels) if any(fetched[rel] is None for rel in pair)), None)
    if missing is None:
        for seg in task.segments:
            if store.get(store.done_rel(task.clip, seg.index)) is None:  # killed between last frame and DONE
                _write_done(store, task.clip, seg, {})
        return ResumePoint(None, task.num_frames, None)
    checkpoints = sorted(
        (c for seg in task.segments for c in store.checkpoint_frames(task.clip, seg.index) if task.start < c <= missing),
        reverse=True,
    )
    for frame in checkpoints:
        tensors = store.get_checkpoint(task.clip, task.segment_of(frame), frame)
        if tensors is not None:
            state = LoopState.from_tensors(tensors)
            if state.frame == frame:
                return ResumePoint(state, frame - task.start, frame)
            store.event("corrupt", store.checkpoint_rel(task.clip, task.segment_of(frame), frame),
                        f"holds frame {state.frame}, expected {frame}")
    return ResumePoint(initial, 0, None)


def chain_standing(store: RenderStore, task: ChainTask, fresh: bool = False) -> tuple[bool, int]:
    """Where a frame chain stands, from listings alone: (finished, frames done before the point
    it would resume from). Nothing is downloaded: the worker that takes an unfinished chain
    verifies the bytes (:func:`find_resume_point`), so the driver need not do it too."""
    if fresh:
        return False, 0
    if all(_done_by_listing(store, task.clip, seg) for seg in task.segments):
        return True, task.num_frames
    listed: set[int] = set()
    for seg in task.segments:
        sizes = _listed_sizes(store, task.clip, seg)
        listed |= {n for n, pair in sizes.items() if None not in pair}
    missing = next((n for n in range(task.start, task.stop) if n not in listed), task.stop)
    checkpoints = [c for seg in task.segments for c in store.checkpoint_frames(task.clip, seg.index)
                   if task.start < c <= missing]
    return False, max(checkpoints, default=task.start) - task.start


def _anchor_resume_point(store: RenderStore, task: ChainTask, fresh: bool) -> ResumePoint:
    """After the last of the leading anchors the store holds intact (each anchor is its own
    checkpoint). Every one is read: a segment starts from any of them."""
    anchors = task.anchors
    if fresh:
        return ResumePoint(LoopState(0), 0, None)
    stored = set(store.anchor_frames(task.clip))
    before: LoopState | None = None
    for i, anchor in enumerate(anchors):
        state = load_anchor(store, task.clip, anchor) if anchor in stored else None
        expected = anchors[i + 1] if i + 1 < len(anchors) else task.stop
        if state is None or state.frame != expected:
            if state is not None:
                store.event("corrupt", store.anchor_rel(task.clip, anchor),
                            f"holds the state before frame {state.frame}, expected {expected}")
            return ResumePoint(before or LoopState(0), i, anchors[i - 1] if i else None)
        before = state
    return ResumePoint(None, len(anchors), anchors[-1])


def load_anchor(store: RenderStore, clip: str, frame: int) -> LoopState | None:
    """The anchor chain's state after anchor ``frame`` (its ``frame`` is the next anchor)."""
    tensors = store.get_tensors(store.anchor_rel(clip, frame))
    return None if tensors is None else LoopState.from_tensors(tensors)


def segment_ends(store: RenderStore, task: ChainTask, num_frames: int, blend: int) -> SegmentEnds:
    """A segment's anchors from the store: the one it starts on and the one it eases toward."""
    seg = task.segments[0]
    first = load_anchor(store, task.clip, seg.start)
    if first is None:
        raise RuntimeError(f"anchor {seg.start} is missing from the store; render the anchor chain first")
    following = load_anchor(store, task.clip, seg.stop) if seg.stop < num_frames else None
    if seg.stop < num_frames and following is None:
        raise RuntimeError(f"anchor {seg.stop} is missing from the store; render the anchor chain first")
    return SegmentEnds(replace(first, frame=seg.start + 1), None if following is None else following.latent,
                       seg.stop, blend)


def _write_done(store: RenderStore, clip: str, seg: Segment, known: dict[int, str]) -> None:
    """DONE marker for a segment, with every frame's hash (from this run where it rendered the
    frame, else from the store) and the sizes of every frame and latent (for the fast resume)."""
    need = [n for n in range(seg.start, seg.stop) if n not in known]
    fetched = store.get_many([store.frame_rel(clip, seg.index, n) for n in need])
    hashes = dict(known)
    for n in need:
        data = fetched[store.frame_rel(clip, seg.index, n)]
        if data is None:
            return  # not complete after all; the next run renders it
        hashes[n] = hashlib.sha256(data).hexdigest()
    sizes = _listed_sizes(store, clip, seg)
    if any(None in pair for pair in sizes.values()):
        return
    body = {"frames": seg.num_frames, "sha256": {str(n): hashes[n] for n in range(seg.start, seg.stop)},
            "size": {str(n): sizes[n] for n in range(seg.start, seg.stop)}}
    store.write_json(store.done_rel(clip, seg.index), body)


def _listed_sizes(store: RenderStore, clip: str, seg: Segment) -> dict[int, list[int | None]]:
    """[PNG size, latent size] of every frame of a segment that the listings show vouched."""
    pngs = store.listed_sizes(posixpath.dirname(store.frame_rel(clip, seg.index, seg.start)))
    latents = store.listed_sizes(posixpath.dirname(store.latent_rel(clip, seg.index, seg.start)))
    return {n: [pngs.get(posixpath.basename(store.frame_rel(clip, seg.index, n))),
                latents.get(posixpath.basename(store.latent_rel(clip, seg.index, n)))]
            for n in range(seg.start, seg.stop)}


def _done_by_listing(store: RenderStore, clip: str, seg: Segment) -> bool:
    """A finished segment, known from its DONE and two listings without downloading a frame:
    every frame and latent is vouched at the size DONE recorded. Their bytes are verified where
    they are read, by the final stage, which drops the DONE of a segment it finds damaged."""
    done = store.read_json(store.done_rel(clip, seg.index))
    recorded = done.get("size") if isinstance(done, dict) else None
    if not recorded:
        return False  # a DONE from before sizes were recorded: the full check decides
    return all(recorded.get(str(n)) == pair for n, pair in _listed_sizes(store, clip, seg).items())


class RunLog:
    """Run-log rows of one chain, flushed to the store after each checkpoint and at the end."""

    def __init__(self, store: RenderStore, clip: str, worker: str):
        self.store, self.clip, self.worker = store, clip, worker
        self.pending: list[dict[str, Any]] = []
        self.last = time.perf_counter()

    def add(self, segment: int, frame: int, together: int) -> None:
        now = time.perf_counter()
        self.pending.append({"clip": self.clip, "segment": segment, "frame": frame, "worker": self.worker,
                             "chains": together, "seconds": now - self.last, "timestamp": time.time()})
        self.last = now

    def flush(self) -> None:
        if self.pending:
            self.store.put_runlog(list(self.pending), self.worker)
            self.pending.clear()


class FrameWriter:
    """Takes a chain's frames: decodes and writes each, checkpoints the loop state every
    ``checkpoint_every`` frames, and marks each segment DONE when its last frame is in."""

    def __init__(self, store: RenderStore, task: ChainTask, model: Any, checkpoint_every: int, worker: str,
                 on_frame: Callable[[int, np.ndarray, LoopState], Any] | None = None):
        self.store, self.task, self.model, self.every = store, task, model, checkpoint_every
        self.on_frame = on_frame
        self.log = RunLog(store, task.clip, worker)
        self.hashes: dict[int, str] = {}

    def __call__(self, frame: int, z: Any, state: LoopState, together: int = 1) -> None:
        store, task = self.store, self.task
        rgb = decode(self.model, z)
        segment = task.segment_of(frame)
        # The latent first: a frame whose PNG is vouched for always has its latent (interpolation).
        store.put_tensors(store.latent_rel(task.clip, segment, frame), {"latent": z.to(torch.float16).contiguous()})
        self.hashes[frame] = store.write_frame(task.clip, segment, frame, rgb)
        self.log.add(segment, frame, together)
        if frame + 1 < task.stop and (frame + 1 - task.start) % self.every == 0:
            store.put_checkpoint(task.clip, task.segment_of(frame + 1), frame + 1, state.tensors())
            self.log.flush()  # after the checkpoint: logged frames are never redone
        for seg in task.segments:
            if seg.stop - 1 == frame:
                _write_done(store, task.clip, seg, {n: self.hashes[n] for n in range(seg.start, seg.stop) if n in self.hashes})
        if self.on_frame is not None:
            self.on_frame(frame, rgb, state)


class AnchorWriter:
    """Takes an anchor chain's frames: stores the loop state after each anchor (its checkpoint)."""

    def __init__(self, store: RenderStore, task: ChainTask, worker: str):
        self.store, self.task = store, task
        self.log = RunLog(store, task.clip, worker)

    def __call__(self, frame: int, z: Any, state: LoopState, together: int = 1) -> None:
        self.store.put_tensors(self.store.anchor_rel(self.task.clip, frame), state.tensors())
        self.log.add(-1, frame, together)


# ---------------------------------------------------------------------------------------------
# The Ray actor: one resident model, many chains


class ChainError(RuntimeError):
    """A chain that failed; names the clip (and segment) and the frame it was on."""

    def __init__(self, label: str, frame: int, message: str):
        self.label, self.frame, self.message = label, frame, message
        clip, _, part = label.partition("/")
        where = "" if not part else " anchor chain" if part == ANCHORS else f" segment {part}"
        super().__init__(f"clip {clip!r}{where} failed at frame {frame}: {message}")

    def __reduce__(self):  # travels back to the driver through Ray intact
        return ChainError, (self.label, self.frame, self.message)


@dataclass(frozen=True)
class ChainJob:
    """Everything a worker needs to render one chain, besides its model and the embeddings."""

    task: ChainTask
    clip: Any  # ClipSpec
    width: int
    height: int
    store_uri: str
    storage_options: dict
    checkpoint_every: int
    fresh: bool = False
    send_latents: bool = False


@dataclass(frozen=True)
class ChainReport:
    label: str
    kind: str
    frames_rendered: int  # anchors, for an anchor chain
    seconds: float
    worker: str
    resumed_from: int | None
    advanced_together: int = 1  # the most chains this worker advanced in one batch


class Progress:
    """A tiny actor the workers report frames to; the driver drains it for its progress bar."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, Any]] = []

    def frame(self, clip: str, frame: int, latent: Any = None) -> None:
        self.events.append((clip, frame, latent))

    def drain(self) -> list[tuple[str, int, Any]]:
        events, self.events = self.events, []
        return events


class InProcess:
    """An object called the way a Ray actor handle is (``handle.method.remote(...)``), in this
    process: lets benches and tests drive a FluxWorker with a Progress without Ray."""

    def __init__(self, target: Any):
        self._target = target

    def __getattr__(self, name: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(remote=getattr(self._target, name))


@dataclass
class _Run:
    """One chain on a worker: its job, where it resumed, and the lane that advances it."""

    job: ChainJob
    resume: ResumePoint
    lane: Lane
    sink: Any
    together: int = 1

    def on_frame(self, frame: int, z: Any, state: LoopState, together: int) -> None:
        self.together = max(self.together, together)
        self.sink(frame, z, state, together)


class FluxWorker:
    """Loads its model once and renders the chains it is given into the store, up to
    ``cluster.chains_per_worker`` of them advanced together through one batched forward."""

    def __init__(self, model_spec: Any, threads: int | None = None, device: str | None = None, offload: bool = False):
        import torch

        from ..model.loading import load_model

        if threads:
            torch.set_num_threads(threads)  # the same on every worker: same float results everywhere
        self.name = worker_name()
        self.model = load_model(model_spec, device, offload=offload)

    def ready(self) -> str:
        return self.name

    def embed(self, texts: Sequence[str]) -> dict[str, Any]:
        from ..frame.prompts import encode_prompts

        return {text: emb.to("cpu") for text, emb in encode_prompts(self.model, texts).items()}

    def release_text_encoders(self) -> None:
        self.model.release_text_encoders()

    def decode(self, latents: Sequence[Any]) -> list[np.ndarray]:
        """RGB frames of latents (the final stage's latent interpolation)."""
        return [decode(self.model, z) for z in latents]

    def render(self, jobs: Sequence[ChainJob], embeddings: dict[str, Any],
               progress: Any = None) -> list[ChainReport | ChainError]:
        """Render every job's chain, all advancing together; one result per job, in order: its
        report, or the ChainError it failed with (the other chains still finish)."""
        started = time.perf_counter()
        results: list[ChainReport | ChainError | None] = [None] * len(jobs)
        runs: dict[int, _Run] = {}
        for i, job in enumerate(jobs):
            try:
                run = self._open(job, embeddings, progress)
            except Exception as exc:
                results[i] = ChainError(job.task.label, job.task.start, first_line(exc))
                continue
            if run.resume.state is None:
                results[i] = ChainReport(job.task.label, job.task.kind, 0, 0.0, self.name, None)
            else:
                runs[i] = run
        try:
            advance([run.lane for run in runs.values()])
        finally:
            for run in runs.values():
                run.sink.log.flush()  # Ctrl-C or an error: keep what was logged
        for i, run in runs.items():
            task, lane = run.job.task, run.lane
            if lane.error is not None:
                results[i] = ChainError(task.label, lane.state.frame, first_line(lane.error))
            else:
                done = _count(task, run.resume.state.frame, lane.state.frame)
                results[i] = ChainReport(task.label, task.kind, done, time.perf_counter() - started, self.name,
                                         run.resume.from_checkpoint, run.together)
        return results  # type: ignore[return-value]

    def _open(self, job: ChainJob, embeddings: dict[str, Any], progress: Any) -> _Run:
        from ..frame.loop import encode, load_image

        task, clip = job.task, job.clip
        store = RenderStore(job.store_uri, job.storage_options)
        resume = find_resume_point(store, task, job.fresh)
        if resume.state is None:
            return _Run(job, resume, None, None)  # type: ignore[arg-type]
        ends = segment_ends(store, task, clip.num_frames, clip.blend) if task.kind == SEGMENT else None
        init = None
        if clip.init_image and task.kind != SEGMENT and resume.state.frame == 0:
            init = encode(self.model, load_image(clip.init_image, job.width, job.height))
        chain = Chain(self.model, clip, job.width, job.height, embeddings, init,
                      anchors=task.anchors if task.kind == ANCHORS else None, ends=ends)
        if task.kind == ANCHORS:
            sink: Any = AnchorWriter(store, task, self.name)
        else:
            def report(n: int, rgb: np.ndarray, state: LoopState) -> None:
                if progress is not None:
                    progress.frame.remote(task.clip, n, state.latent if job.send_latents else None)

            sink = FrameWriter(store, task, self.model, job.checkpoint_every, self.name, report)
        run = _Run(job, resume, None, sink)  # type: ignore[arg-type]
        run.lane = Lane(chain, resume.state, task.stop, run.on_frame)
        return run


def _count(task: ChainTask, first: int, stop: int) -> int:
    """Frames (anchors, for an anchor chain) rendered between two states of a chain."""
    if task.kind == ANCHORS:
        return sum(1 for a in task.anchors if first <= a < stop)
    return stop - first


def render_clip_here(worker: FluxWorker, spec: Any, clip_name: str, store_uri: str,
                     chains_per_call: int = 1) -> dict[int, Any]:
    """Render one clip of a job into the job folder ``store_uri``, in this process and without
    Ray: its anchors, then its chains ``chains_per_call`` at a time through :meth:`FluxWorker.render`. Returns every frame's latent
    (for measurements: seams, batching tolerance). Raises the first chain's error."""
    from ..job.plan import plan

    clip_plan = next(c for c in plan(spec).clips if c.name == clip_name)
    clip = next(c for c in spec.clips if c.name == clip_name)
    anchors, frame_tasks = chain_tasks(clip_plan)
    embeddings = worker.embed(list(clip.prompts.values()))
    progress = Progress()
    calls = ([[anchors]] if anchors else []) + [frame_tasks[i : i + chains_per_call]
                                                for i in range(0, len(frame_tasks), chains_per_call)]
    for tasks in calls:
        jobs = [ChainJob(t, clip, spec.width, spec.height, store_uri, dict(spec.output.storage_options),
                         spec.cluster.checkpoint_every, send_latents=True) for t in tasks]
        for result in worker.render(jobs, embeddings, InProcess(progress)):
            if isinstance(result, ChainError):
                raise result
    return {frame: latent for _, frame, latent in progress.drain()}
