"""Where a chain's frames go as they come: the store, the run log, and a progress callback.

:class:`FrameWriter` decodes each frame, writes its latent and then its PNG (so a vouched PNG
always has its latent), checkpoints the loop state every ``checkpoint_every`` frames and marks
each segment DONE when its last frame is in. :class:`AnchorWriter` stores an anchor chain's loop
state after each anchor. Both log one run-log row per frame, flushed after each checkpoint.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from ..frame.loop import LoopState
from ..job.plan import ChainTask
from ..model.vae import decode
from ..store import RenderStore
from .resume import write_done


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
                write_done(store, task.clip, seg, {n: self.hashes[n] for n in range(seg.start, seg.stop) if n in self.hashes})
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
