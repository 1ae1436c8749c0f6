"""The final stage hidden behind rendering: the driver's side of ``progress.FollowingStage``.

The stage starts on a CPU once the workers are up and encodes the job's videos while its chains
render: a segment's frames are read as soon as its chain returns, in the order the stage after
the render would read them, so only the frames of the last chains are left to encode when the
last one returns. ``interpolation_method: latent`` decodes on a worker, which is busy rendering,
so such a job keeps the stage after the render; so does a stage whose actor died (its node was
lost): the driver then runs it as before.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from ..job.plan import ChainKind, ChainTask, RenderPlan
from ..job.spec import JobSpec
from ..post.finalize import FinalResult
from ..store import RenderStore
from .cluster import forwarded_env
from .progress import FollowingStage


def follows(spec: JobSpec) -> bool:
    """Whether this job's final stage can run while it renders."""
    return not (spec.post.interpolation_method == "latent" and spec.post.interpolation > 1)


class StageDuringRender:
    """One job's ``FollowingStage`` actor: started with the workers, told of each chain done,
    asked for the deliverables at the end (or cancelled with a failed render)."""

    def __init__(self, store: RenderStore, render_plan: RenderPlan, spec: JobSpec, pending: Sequence[ChainTask]):
        self.store, self.render_plan, self.spec = store, render_plan, spec
        rendering = {(s.clip, s.index) for task in pending if task.kind is not ChainKind.ANCHORS for s in task.segments}
        self.final = [(s.clip, s.index) for s in render_plan.segments if (s.clip, s.index) not in rendering]
        self.actor: Any = None

    def start(self) -> None:
        import ray

        # After the workers: CPU workers share out every core, and one left waiting for a core
        # this actor held would never start. Without a free core it runs beside them.
        cpus = 1 if ray.available_resources().get("CPU", 0) >= 1 else 0
        stage = ray.remote(FollowingStage).options(num_cpus=cpus, max_concurrency=4, **forwarded_env())
        self.actor = stage.remote(self.store, self.render_plan, self.spec, self.final)

    def chain_done(self, task: ChainTask) -> None:
        if self.actor is not None and task.kind is not ChainKind.ANCHORS:
            self.actor.segments_done.remote([(s.clip, s.index) for s in task.segments])

    def finish(self, progress: bool) -> FinalResult | None:
        """The deliverables once the stage has encoded its last frames (a bar for those); None when
        its actor is gone, for the driver to run the stage itself. The caller then calls :meth:`stop`."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError
        from tqdm import tqdm

        if self.actor is None:
            return None
        # Every chain has returned: every segment is final, whatever the stage was told (a lost
        # message must not leave it waiting for ever).
        self.actor.segments_done.remote([(s.clip, s.index) for s in self.render_plan.segments])
        result = self.actor.result.remote()
        bar = tqdm(total=self.render_plan.video_frames, desc="encode", unit="frame", disable=not progress,
                   file=sys.stderr)
        try:
            while not ray.wait([result], timeout=0.25)[0]:
                encoded, _ = ray.get(self.actor.progress.remote())
                bar.update(max(0, encoded - bar.n))
            final: FinalResult = ray.get(result)
            bar.update(max(0, final.frames - bar.n))
            return final
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else None
            if cause is None:
                raise
            raise cause from None  # the stage's own one-line error
        except RayActorError:
            return None
        finally:
            bar.close()

    def stop(self) -> None:
        """End the actor (a long-lived caller's Ray outlives the render); its temporary files go
        with it, and it has written nothing to the store unless it finished."""
        import ray

        if self.actor is not None:
            try:
                ray.get(self.actor.cancel.remote(), timeout=10)
            except Exception:  # gone already, or stuck in ffmpeg: killed below either way
                pass
            ray.kill(self.actor)
            self.actor = None
