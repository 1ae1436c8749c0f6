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
