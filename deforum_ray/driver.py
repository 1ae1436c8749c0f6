"""render(spec): plan, check the output folder, resume what exists, render the rest, finalize.

Today every chain runs in this process, one after another; the Ray worker pool takes the same
steps in parallel (one resident model per GPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import yaml
from torch import Tensor

from .finalize import finalize
from .loop import Chain, LoopState, encode, load_image
from .models import FluxModel, load_model
from .plan import RenderPlan, pixel_tree, plan, tree_diff
from .prompts import encode_prompts
from .spec import JobSpec, spec_to_dict, spec_to_yaml
from .store import RenderStore, job_folders
from .worker import ChainTask, ResumePoint, find_resume_point, render_chain

FrameCallback = Callable[[int, int, Tensor], Any]  # (frames done in the job, total frames, latent)


class JobConflict(ValueError):
    """The output already holds this job name rendered from a different spec (exit 2)."""


@dataclass(frozen=True)
class RenderResult:
    output_dir: str
    video: str
    frames: int  # frames rendered by this run
    resumed: int  # frames found finished in the store
    seconds: float


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


def render(spec: JobSpec, *, model: FluxModel | None = None, device: Any = None, progress: bool = True,
           callback: FrameCallback | None = None, fresh: bool = False) -> RenderResult:
    """Render a validated job into ``<output.uri>/<name>-<job_id>/`` and encode its video.

    Running it again resumes: finished frames are kept, unfinished chains continue from their
    last good checkpoint. ``fresh`` renders everything again. A caller that passes its own
    ``model`` keeps it whole; a model loaded here gives up its text encoders once the job's
    prompts are embedded.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    render_plan = plan(spec)
    check_output(spec, render_plan, fresh)
    store = output_store(spec).child(f"{render_plan.job_name}-{render_plan.job_id}")
    store.write_text("spec.yaml", spec_to_yaml(spec))
    store.write_json("manifest.json", manifest(render_plan))

    tasks = [ChainTask(c.name, 0, c.num_frames, c.segments) for c in render_plan.clips]
    resumes = [find_resume_point(store, task, LoopState(), fresh) for task in tasks]
    resumed = sum(r.frames_done for r in resumes)
    if any(r.state is not None for r in resumes):
        _render_chains(spec, render_plan, store, tasks, resumes, model, device, progress, callback, resumed)
    video = finalize(store, render_plan, spec)
    return RenderResult(store.url(), video, render_plan.total_frames - resumed, resumed, time.perf_counter() - started)


def _render_chains(spec: JobSpec, render_plan: RenderPlan, store: RenderStore, tasks: list[ChainTask],
                   resumes: list[ResumePoint], model: FluxModel | None, device: Any, progress: bool,
                   callback: FrameCallback | None, resumed: int) -> None:
    from tqdm import tqdm

    owned = model is None
    if model is None:
        model = load_model(spec.model, device)
    clips = {clip.name: clip for clip in spec.clips}
    todo = [clips[t.clip] for t, r in zip(tasks, resumes) if r.state is not None]
    embeddings = encode_prompts(model, [text for clip in todo for text in clip.prompts.values()])
    if owned:
        model.release_text_encoders()
    done = resumed
    with tqdm(total=render_plan.total_frames, initial=resumed, unit="frame", disable=not progress,
              dynamic_ncols=True) as bar:
        for task, resume in zip(tasks, resumes):
            if resume.state is None:
                continue
            clip = clips[task.clip]
            bar.set_description(clip.name)
            init = encode(model, load_image(clip.init_image, spec.width, spec.height)) if clip.init_image else None
            chain = Chain(model, clip, spec.width, spec.height, embeddings, init)

            def on_frame(frame: int, rgb: np.ndarray, state: LoopState) -> None:
                nonlocal done
                done += 1
                bar.update(1)
                if callback is not None:
                    callback(done - 1, render_plan.total_frames, state.latent)

            render_chain(chain, store, task, resume, checkpoint_every=spec.cluster.checkpoint_every, on_frame=on_frame)
