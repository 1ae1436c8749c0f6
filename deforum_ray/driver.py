"""render(spec): plan, embed every prompt once, run each clip's frame loop, finalize.

Today every chain runs in this process, one after another; the Ray worker pool takes the same
steps in parallel (one resident model per GPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import Tensor

from .finalize import finalize
from .loop import Chain, LoopState, encode, load_image
from .models import FluxModel, load_model
from .plan import RenderPlan, plan
from .prompts import encode_prompts
from .spec import JobSpec, spec_to_yaml
from .store import RenderStore

log = logging.getLogger(__name__)

FrameCallback = Callable[[int, int, Tensor], Any]  # (frame index in the job, total frames, latent)


@dataclass(frozen=True)
class RenderResult:
    output_dir: str
    video: str
    frames: int
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


def render(spec: JobSpec, *, model: FluxModel | None = None, device: Any = None, progress: bool = True,
           callback: FrameCallback | None = None) -> RenderResult:
    """Render a validated job into ``<output.uri>/<name>-<job_id>/`` and encode its video.

    A caller that passes its own ``model`` keeps it whole; a model loaded here gives up its text
    encoders once the job's prompts are embedded.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    render_plan = plan(spec)
    store = RenderStore(render_plan.output_dir)
    store.write_text("spec.yaml", spec_to_yaml(spec))
    store.write_json("manifest.json", manifest(render_plan))

    owned = model is None
    if model is None:
        model = load_model(spec.model, device)
    embeddings = encode_prompts(model, [text for clip in spec.clips for text in clip.prompts.values()])
    if owned:
        model.release_text_encoders()

    done = 0
    with tqdm(total=render_plan.total_frames, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for clip, clip_plan in zip(spec.clips, render_plan.clips):
            bar.set_description(clip.name)
            init = encode(model, load_image(clip.init_image, spec.width, spec.height)) if clip.init_image else None
            chain = Chain(model, clip, spec.width, spec.height, embeddings, init)
            segment_of = _segment_lookup(clip_plan.segments)

            def on_frame(frame: int, rgb: np.ndarray, state: LoopState, clip_name: str = clip.name) -> None:
                nonlocal done
                store.write_frame(clip_name, segment_of[frame], frame, rgb)
                done += 1
                bar.update(1)
                if callback is not None:
                    callback(done - 1, render_plan.total_frames, state.latent)

            chain.run(LoopState(), clip.num_frames, on_frame)
    video = finalize(store, render_plan, spec)
    return RenderResult(store.url(), video, render_plan.total_frames, time.perf_counter() - started)


def _segment_lookup(segments: Any) -> dict[int, int]:
    return {n: seg.index for seg in segments for n in range(seg.start, seg.stop)}
