"""Rendering one chain of frames into the store, resumably.

A chain is a run of frames where frame n needs frame n-1 (a whole clip, or one segment of it).
Frames are written as they come; every ``checkpoint_every`` frames the whole loop state is
checkpointed and the run log flushed; each segment gets a DONE marker when its last frame is in.
Resuming finds the first frame the store cannot vouch for and restarts from the newest good
checkpoint at or before it, so a resumed chain repeats at most ``checkpoint_every`` frames and
produces exactly the frames an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import first_line
from .loop import Chain, LoopState
from .plan import Segment
from .store import RenderStore, worker_name


@dataclass(frozen=True)
class ChainTask:
    """Frames ``start ... stop - 1`` of one clip, written into the folders of ``segments``."""

    clip: str
    start: int
    stop: int
    segments: tuple[Segment, ...]

    def segment_of(self, frame: int) -> int:
        for seg in self.segments:
            if seg.start <= frame < seg.stop:
                return seg.index
        raise ValueError(f"frame {frame} is in no segment of clip {self.clip!r}")

    @property
    def num_frames(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ResumePoint:
    """Where a chain continues: ``state`` is None when nothing is left to render."""

    state: LoopState | None
    frames_done: int  # frames before the resume point, already in the store
    from_checkpoint: int | None


def find_resume_point(store: RenderStore, task: ChainTask, initial: LoopState, fresh: bool = False) -> ResumePoint:
    """The newest good checkpoint at or before the first frame the store cannot vouch for."""
    if fresh:
        return ResumePoint(initial, 0, None)
    frames = range(task.start, task.stop)
    rels = [store.frame_rel(task.clip, task.segment_of(n), n) for n in frames]
    fetched = store.get_many(rels)
    missing = next((n for n, rel in zip(frames, rels) if fetched[rel] is None), None)
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


def _write_done(store: RenderStore, clip: str, seg: Segment, known: dict[int, str]) -> None:
    """DONE marker for a segment, with every frame's hash: from this run where it rendered the
    frame, else from the store (a segment begun by an earlier run)."""
    need = [n for n in range(seg.start, seg.stop) if n not in known]
    fetched = store.get_many([store.frame_rel(clip, seg.index, n) for n in need])
    hashes = dict(known)
    for n in need:
        data = fetched[store.frame_rel(clip, seg.index, n)]
        if data is None:
            return  # not complete after all; the next run renders it
        hashes[n] = hashlib.sha256(data).hexdigest()
    body = {"frames": seg.num_frames, "sha256": {str(n): hashes[n] for n in range(seg.start, seg.stop)}}
    store.write_json(store.done_rel(clip, seg.index), body)


def render_chain(
    chain: Chain,
    store: RenderStore,
    task: ChainTask,
    resume: ResumePoint,
    *,
    checkpoint_every: int,
    on_frame: Callable[[int, np.ndarray, LoopState], Any] | None = None,
    worker: str | None = None,
) -> LoopState | None:
    """Render the rest of a chain from its resume point; returns the final loop state."""
    if resume.state is None:
        return None
    worker = worker or worker_name()
    pending: list[dict[str, Any]] = []
    hashes: dict[int, str] = {}
    last = time.perf_counter()

    def write(frame: int, rgb: np.ndarray, state: LoopState) -> None:
        nonlocal last
        segment = task.segment_of(frame)
        hashes[frame] = store.write_frame(task.clip, segment, frame, rgb)
        now = time.perf_counter()
        pending.append({"clip": task.clip, "segment": segment, "frame": frame, "worker": worker,
                        "seconds": now - last, "timestamp": time.time()})
        last = now
        if frame + 1 < task.stop and (frame + 1 - task.start) % checkpoint_every == 0:
            store.put_checkpoint(task.clip, task.segment_of(frame + 1), frame + 1, state.tensors())
            _flush(store, pending, worker)  # after the checkpoint: logged frames are never redone
        for seg in _segments_ending_at(task.segments, frame):
            _write_done(store, task.clip, seg, {n: hashes[n] for n in range(seg.start, seg.stop) if n in hashes})
        if on_frame is not None:
            on_frame(frame, rgb, state)

    try:
        return chain.run(resume.state, task.stop, write)
    finally:
        _flush(store, pending, worker)  # Ctrl-C or an error: keep what was logged


def _segments_ending_at(segments: Sequence[Segment], frame: int) -> list[Segment]:
    return [seg for seg in segments if seg.stop - 1 == frame]


def _flush(store: RenderStore, pending: list[dict[str, Any]], worker: str) -> None:
    if pending:
        store.put_runlog(list(pending), worker)
        pending.clear()


# ---------------------------------------------------------------------------------------------
# The Ray actor: one resident model, many chains


class ChainError(RuntimeError):
    """A chain that failed; names the clip and the frame it was on."""

    def __init__(self, clip: str, frame: int, message: str):
        self.clip, self.frame, self.message = clip, frame, message
        super().__init__(f"clip {clip!r} failed at frame {frame}: {message}")

    def __reduce__(self):  # travels back to the driver through Ray intact
        return ChainError, (self.clip, self.frame, self.message)


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
    clip: str
    start: int
    stop: int
    frames_rendered: int
    seconds: float
    worker: str
    resumed_from: int | None


class Progress:
    """A tiny actor the workers report frames to; the driver drains it for its progress bar."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, Any]] = []

    def frame(self, clip: str, frame: int, latent: Any = None) -> None:
        self.events.append((clip, frame, latent))

    def drain(self) -> list[tuple[str, int, Any]]:
        events, self.events = self.events, []
        return events


class FluxWorker:
    """Loads its model once and renders every chain it is given into the store."""

    def __init__(self, model_spec: Any, threads: int | None = None, device: str | None = None, offload: bool = False):
        import torch

        from .models import load_model

        if threads:
            torch.set_num_threads(threads)  # the same on every worker: same float results everywhere
        self.name = worker_name()
        self.model = load_model(model_spec, device, offload=offload)

    def ready(self) -> str:
        return self.name

    def embed(self, texts: Sequence[str]) -> dict[str, Any]:
        from .prompts import encode_prompts

        return {text: emb.to("cpu") for text, emb in encode_prompts(self.model, texts).items()}

    def release_text_encoders(self) -> None:
        self.model.release_text_encoders()

    def render(self, job: ChainJob, embeddings: dict[str, Any], progress: Any = None) -> ChainReport:
        from .loop import encode, load_image

        started = time.perf_counter()
        task, clip = job.task, job.clip
        store = RenderStore(job.store_uri, job.storage_options)
        frame = task.start
        try:
            resume = find_resume_point(store, task, LoopState(), job.fresh)
            if resume.state is None:
                return ChainReport(task.clip, task.start, task.stop, 0, 0.0, self.name, None)
            frame = resume.state.frame
            init = encode(self.model, load_image(clip.init_image, job.width, job.height)) if clip.init_image else None
            chain = Chain(self.model, clip, job.width, job.height, embeddings, init)

            def on_frame(n: int, rgb: np.ndarray, state: LoopState) -> None:
                nonlocal frame
                frame = n + 1
                if progress is not None:
                    progress.frame.remote(task.clip, n, state.latent if job.send_latents else None)

            render_chain(chain, store, task, resume, checkpoint_every=job.checkpoint_every, on_frame=on_frame,
                         worker=self.name)
        except Exception as exc:
            raise ChainError(task.clip, frame, first_line(exc)) from exc
        rendered = task.stop - resume.state.frame if resume.state is not None else 0
        return ChainReport(task.clip, task.start, task.stop, rendered, time.perf_counter() - started, self.name,
                           resume.from_checkpoint)
