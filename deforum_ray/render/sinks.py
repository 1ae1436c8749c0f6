"""Where a chain's frames go as they come: the store, the run log, and a progress callback.

:class:`FrameWriter` decodes each frame, writes its latent and then its PNG (so a vouched PNG
always has its latent), checkpoints the loop state every ``checkpoint_every`` frames and marks
each segment DONE when its last frame is in. :class:`AnchorWriter` stores an anchor chain's loop
state after each anchor. Both log one run-log row per frame, flushed after each checkpoint.

The writes run on a :class:`WriteQueue`, off the thread that drives the model: decode and the
device-to-host copies stay on the model's thread, PNG encoding goes to a few threads, and the
store writes run on one thread *in the order they were handed over*. So the write protocol is
exactly the synchronous one (a frame's latent before its PNG; the checkpoint for frame n only
after every frame before n; DONE last), and a SIGKILL at any moment leaves what a synchronous
writer killed a few frames earlier would have left.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch

from ..frame.loop import FrameOut
from ..job.plan import ChainTask
from ..model.vae import decode
from ..store import RenderStore, encode_png
from .resume import write_done


class WriteQueue:
    """A worker's store writes, in order, on one background thread; PNG encoding on ``encoders``
    threads (zlib releases the GIL; default: half the cores, 2 to 8, since a 512² frame takes
    40-120 ms to encode and at cadence 4 a worker hands on 30 frames a second: bench/throughput.py). At most ``depth`` writes wait: a slow store slows the render
    down instead of filling memory. ``depth=0`` writes on the caller's thread (``cluster.write_queue``)."""

    def __init__(self, depth: int = 8, encoders: int | None = None):
        if encoders is None:
            encoders = max(2, min(8, (os.cpu_count() or 2) // 2))
        self.depth = depth
        if depth > 0:
            self.encoders = ThreadPoolExecutor(max(1, encoders), thread_name_prefix="png")
            self.pending: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
            self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self.thread.start()

    def encode(self, rgb: np.ndarray) -> Future:
        if self.depth > 0:
            return self.encoders.submit(encode_png, rgb)
        done: Future = Future()
        done.set_result(encode_png(rgb))
        return done

    def submit(self, write: Callable[[], None]) -> None:
        """Run ``write`` after every write handed over before it. ``write`` handles its own errors."""
        if self.depth > 0:
            self.pending.put(write)
        else:
            write()

    def drain(self) -> None:
        """Return once every write handed over so far is done."""
        if self.depth > 0:
            self.pending.join()

    def _run(self) -> None:
        while (write := self.pending.get()) is not None:
            try:
                write()
            finally:
                self.pending.task_done()
        self.pending.task_done()


def gpu_peak_gib() -> float | None:
    """The peak GPU memory this process's torch has reserved, in GiB; None without CUDA."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_reserved() / 2**30


class RunLog:
    """Run-log rows of one chain, flushed to the store after each checkpoint and at the end."""

    def __init__(self, store: RenderStore, clip: str, worker: str):
        self.store, self.clip, self.worker = store, clip, worker
        self.pending: list[dict[str, Any]] = []
        self.last = time.perf_counter()

    def add(self, segment: int, out: FrameOut) -> None:
        now = time.perf_counter()
        self.pending.append({"clip": self.clip, "segment": segment, "frame": out.frame, "worker": self.worker,
                             "chains": out.together, "diffused": out.diffused, "seconds": now - self.last,
                             "timestamp": time.time(), "gpu_peak_gib": gpu_peak_gib()})
        self.last = now

    def flush(self) -> None:
        if self.pending:
            self.store.put_runlog(list(self.pending), self.worker)
            self.pending.clear()


class _Sink:
    """What both writers share: the write queue, the run log, and the first write that failed
    (raised on the chain's next frame and by :meth:`finish`; later writes of the chain are dropped)."""

    def __init__(self, store: RenderStore, task: ChainTask, worker: str, writes: WriteQueue):
        self.store, self.task, self.writes = store, task, writes
        self.log = RunLog(store, task.clip, worker)
        self.failed: tuple[int, BaseException] | None = None

    def _submit(self, frame: int, write: Callable[[], None]) -> None:
        if self.failed is not None:
            raise self.failed[1]

        def guarded() -> None:
            if self.failed is None:
                try:
                    write()
                except BaseException as exc:  # the chain fails; the worker and other chains go on
                    self.failed = (frame, exc)

        self.writes.submit(guarded)

    def finish(self) -> None:
        """Wait for this chain's writes, flush its run log, raise the first write that failed."""
        self.writes.drain()
        self.log.flush()
        if self.failed is not None:
            raise self.failed[1]


class FrameWriter(_Sink):
    """Takes a chain's frames: decodes and writes each, checkpoints the loop state every
    ``checkpoint_every`` frames, and marks each segment DONE when its last frame is in."""

    def __init__(self, store: RenderStore, task: ChainTask, model: Any, checkpoint_every: int, worker: str,
                 writes: WriteQueue, on_frame: Callable[[FrameOut], Any] | None = None):
        super().__init__(store, task, worker, writes)
        self.model, self.every, self.on_frame = model, checkpoint_every, on_frame
        self.hashes: dict[int, str] = {}

    def __call__(self, out: FrameOut) -> None:
        task, frame = self.task, out.frame
        # On the model's thread: decode (unless the loop did, batched) and the copies to the host;
        # the rest is queued.
        rgb = decode(self.model, out.z) if out.picture is None else out.picture
        png = self.writes.encode(rgb)
        latent = {"latent": out.z.to(torch.float16).cpu().contiguous()}
        checkpoint = None
        if frame + 1 < task.stop and (frame + 1 - task.start) % self.every == 0:
            checkpoint = out.state.tensors()
        self._submit(frame, lambda: self._write(replace(out, picture=rgb), png, latent, checkpoint))

    def _write(self, out: FrameOut, png: Future, latent: dict, checkpoint: dict | None) -> None:
        store, task, frame = self.store, self.task, out.frame
        segment = task.segment_of(frame)
        # The latent first: a frame whose PNG is vouched for always has its latent (interpolation).
        store.put_tensors(store.latent_rel(task.clip, segment, frame), latent)
        self.hashes[frame] = store.put_frame(task.clip, segment, frame, png.result())
        self.log.add(segment, out)
        if checkpoint is not None:
            # Before the checkpoint that lets a resume skip these frames: a kill between the two
            # can only log a frame twice (the reader keeps its latest row), never lose its row.
            self.log.flush()
            store.put_checkpoint(task.clip, task.segment_of(frame + 1), frame + 1, checkpoint)
        for seg in task.segments:
            if seg.stop - 1 == frame:
                write_done(store, task.clip, seg, {n: self.hashes[n] for n in range(seg.start, seg.stop) if n in self.hashes})
        if self.on_frame is not None:
            self.on_frame(out)


class AnchorWriter(_Sink):
    """Takes an anchor chain's frames: stores the loop state after each anchor (its checkpoint)."""

    def __call__(self, out: FrameOut) -> None:
        tensors = out.state.tensors()

        def write() -> None:
            self.store.put_tensors(self.store.anchor_rel(self.task.clip, out.frame), tensors)
            self.log.add(-1, out)

        self._submit(out.frame, write)
