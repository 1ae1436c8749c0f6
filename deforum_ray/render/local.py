"""Rendering one clip in this process, without Ray: the same worker, loop and store as a render.

For measurements and tests that need a clip's latents (seams, batching tolerance, latent
interpolation) and for debugging a spec on one machine. Renders go through
:meth:`FluxWorker.render` exactly as on the cluster; only the progress actor is replaced.
"""

from __future__ import annotations

from typing import Any

from ..job.plan import chain_tasks, plan
from .progress import Progress
from .worker import ChainError, ChainJob, FluxWorker


class _InProcess:
    """An object called the way a Ray actor handle is (``handle.method.remote(...)``), in this
    process: lets benches and tests drive a FluxWorker with a Progress without Ray."""

    def __init__(self, target: Any):
        self._target = target

    def __getattr__(self, name: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(remote=getattr(self._target, name))


def render_local(worker: FluxWorker, spec: Any, clip_name: str, store_uri: str,
                 chains_per_call: int = 1) -> dict[int, Any]:
    """Render one clip of a job into the job folder ``store_uri``: its anchors, then its chains
    ``chains_per_call`` at a time. Returns every frame's latent; raises the first chain's error."""
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
        for result in worker.render(jobs, embeddings, _InProcess(progress)):
            if isinstance(result, ChainError):
                raise result
    return {frame: latent for _, frame, latent in progress.drain()}
