"""Small Ray-side pieces of the driver that must start fast: the progress actor and the final
stage's task. This module imports no torch (nor anything that does), so the processes Ray starts
for them are up in a fraction of a second instead of paying for the model libraries' import."""

from __future__ import annotations

import time
from typing import Any

from ..post.finalize import FinalResult, finalize


class Progress:
    """A tiny actor the workers report frames to; the driver drains it for its progress bar."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, Any]] = []

    def frame(self, clip: str, frame: int, latent: Any = None) -> None:
        self.events.append((clip, frame, latent))

    def drain(self) -> list[tuple[str, int, Any]]:
        events, self.events = self.events, []
        return events


def final_task(store: Any, render_plan: Any, spec: Any, decoder_worker: Any, tracker: Any) -> FinalResult:
    """The final stage, run as a Ray task; progress goes to ``tracker`` a few times a second."""
    import ray

    def decode(latents: list[Any]) -> list[Any]:
        return ray.get(decoder_worker.decode.remote(latents))

    reported = [0.0]

    def report(frames: int) -> None:
        now = time.monotonic()
        if now - reported[0] >= 0.2:
            reported[0] = now
            tracker.frame.remote("final", frames)

    return finalize(store, render_plan, spec, decode if decoder_worker is not None else None, report)


class StageCancelled(Exception):
    """The render failed or was stopped: the stage made while it rendered is thrown away."""


class FollowingStage:
    """The final stage made while the job renders: a threaded Ray actor (``max_concurrency`` > 1)
    whose thread runs :func:`~deforum_ray.post.finalize.finalize` from its start, reading each
    segment's frames once the driver says that segment is final (``segments_done``: its chain
    returned; a segment finished before this render is final from the start). Its encoders get the
    frames in the same order as the stage run after the render, so the videos are the same;
    nothing is written to the store before the last frame is encoded (``finalize`` writes each
    deliverable whole, then ``final.json``)."""

    def __init__(self, store: Any, render_plan: Any, spec: Any, final: list[tuple[str, int]]) -> None:
        import threading

        self.final = {(clip, index) for clip, index in final}
        self.changed = threading.Condition()
        self.cancelled = False
        self.encoded = 0  # frames of the joined video encoded so far
        self.waiting_for: tuple[str, int] | None = None
        self.outcome: FinalResult | BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(store, render_plan, spec), daemon=True,
                                       name="following-stage")
        self.thread.start()

    def segments_done(self, segments: list[tuple[str, int]]) -> None:
        with self.changed:
            self.final.update((clip, index) for clip, index in segments)
            self.changed.notify_all()

    def progress(self) -> tuple[int, tuple[str, int] | None]:
        """Frames encoded so far, and the segment the stage waits for (None: it is not waiting)."""
        return self.encoded, self.waiting_for

    def result(self) -> FinalResult:
        """Once every segment is final: the deliverables, or the stage's own error."""
        self.thread.join()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome

    def cancel(self) -> None:
        with self.changed:
            self.cancelled = True
            self.changed.notify_all()
        self.thread.join()

    def _wait(self, clip: str, index: int) -> None:
        with self.changed:
            while (clip, index) not in self.final and not self.cancelled:
                self.waiting_for = (clip, index)
                self.changed.wait()
            self.waiting_for = None
            if self.cancelled:
                raise StageCancelled(f"clip {clip!r}: segment {index} will not be rendered by this run")

    def _count(self, frames: int) -> None:
        self.encoded = frames

    def _run(self, store: Any, render_plan: Any, spec: Any) -> None:
        try:
            self.outcome = finalize(store, render_plan, spec, progress=self._count, ready=self._wait)
        except BaseException as exc:  # handed to the driver by result()
            self.outcome = exc
