"""RenderPlan: what a validated job will render, cut into the chains that run in parallel.

A clip is one chain unless ``segment_length: N`` cuts it at anchor frames 0, N, 2N, ...: the
anchors render first as their own short chain, then every segment ``[a_i, a_{i+1})`` renders in
parallel from its anchor (DESIGN.md section 3). The ``job_id`` hashes everything that
changes pixels and nothing else (not the job name, fps, post-processing, storage or cluster), so
re-running a job resumes into the same folder and a changed picture gets a new one.
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .frames import Cadence, ClipFrames, start_indices
from .inputs import local_path
from .spec import MOTION_3D_KEYS, RENDER_KEYS, ClipSpec, JobSpec, clip_output_frames, spec_to_dict
from ..table import format_table

PLAN_VERSION = 2  # bump when the renderer's pixels change for the same spec (2: keyframe anchors)


@dataclass(frozen=True)
class Segment:
    clip: str
    index: int
    start: int  # its anchor frame
    stop: int  # one past its last frame

    @property
    def num_frames(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ClipPlan:
    name: str
    num_frames: int
    segments: tuple[Segment, ...]
    passes: int  # transformer passes over all frames
    diffused: int  # frames denoised (anchors included); the rest are warped and blended (cadence)
    prompt_keys: tuple[int, ...]

    @functools.cached_property  # read per segment by plan and driver: once, not O(segments) each time
    def anchors(self) -> tuple[int, ...]:
        return tuple(seg.start for seg in self.segments) if len(self.segments) > 1 else ()


class ChainKind(enum.Enum):
    """What a chain renders; loop, worker and driver all branch on this one type."""

    CLIP = "clip"  # a whole clip: every frame from the one before
    ANCHORS = "anchors"  # a clip's anchor frames 0, N, 2N, ...: each from the anchor before
    SEGMENT = "segment"  # the frames between two anchors, starting on the first


@dataclass(frozen=True)
class ChainTask:
    """One sequential chain of a clip: the whole clip, its anchor chain, or one anchored segment.

    ``CLIP`` and ``SEGMENT`` chains write frames ``start ... stop - 1`` into the folders of
    ``segments``; an ``ANCHORS`` chain stores the loop state after each segment's first frame."""

    clip: str
    start: int
    stop: int
    segments: tuple[Segment, ...]
    kind: ChainKind = ChainKind.CLIP

    def segment_of(self, frame: int) -> int:
        i = bisect.bisect_right(self.anchors, frame) - 1  # segments are in order and contiguous
        if i >= 0 and frame < self.segments[i].stop:
            return self.segments[i].index
        raise ValueError(f"frame {frame} is in no segment of clip {self.clip!r}")

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    @functools.cached_property
    def anchors(self) -> tuple[int, ...]:
        return tuple(seg.start for seg in self.segments)

    @property
    def label(self) -> str:
        """How messages and tables name it: ``a``, ``a/anchors``, ``a/3``."""
        if self.kind is ChainKind.ANCHORS:
            return f"{self.clip}/anchors"
        return f"{self.clip}/{self.segments[0].index}" if self.kind is ChainKind.SEGMENT else self.clip


def chain_tasks(clip: ClipPlan) -> tuple[ChainTask | None, list[ChainTask]]:
    """(the anchor chain, if the clip has anchors; the chains that write its frames)."""
    if not clip.anchors:
        return None, [ChainTask(clip.name, 0, clip.num_frames, clip.segments)]
    anchors = ChainTask(clip.name, 0, clip.num_frames, clip.segments, ChainKind.ANCHORS)
    return anchors, [ChainTask(clip.name, seg.start, seg.stop, (seg,), ChainKind.SEGMENT) for seg in clip.segments]


@dataclass(frozen=True)
class RenderPlan:
    job_name: str
    job_id: str
    output_dir: str
    clips: tuple[ClipPlan, ...]
    interpolation: int
    fps: float
    loop: bool = False
    crossfade: int = 0  # output frames neighbouring clips overlap by (0: cut)

    @property
    def total_frames(self) -> int:
        return sum(c.num_frames for c in self.clips)

    @property
    def total_passes(self) -> int:
        return sum(c.passes for c in self.clips)

    @property
    def total_diffused(self) -> int:
        return sum(c.diffused for c in self.clips)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(seg for clip in self.clips for seg in clip.segments)

    @property
    def video_frames(self) -> int:
        """Frames in the joined video: each clip interpolated, then looped; minus the crossfades."""
        per_clip = [clip_output_frames(c.num_frames, self.interpolation, self.loop) for c in self.clips]
        return sum(per_clip) - self.crossfade * (len(per_clip) - 1)


def frame_passes(clip: ClipSpec) -> list[int]:
    """Transformer passes for each frame: all steps for a first frame from noise, else the
    steps left after the img2img start index."""
    return ClipFrames.of(clip).passes.tolist()


def diffused_frames(clip: ClipSpec, segments: tuple[Segment, ...]) -> list[int]:
    """The frames the transformer denoises, besides the anchors after the first: each chain's
    cadence keys (a segment's first frame is its anchor, already denoised)."""
    return [k for seg in segments for k in Cadence(seg.start, seg.stop, clip.cadence).keys()
            if k == 0 or k != seg.start]


def clip_passes(clip: ClipSpec, segments: tuple[Segment, ...], diffused: list[int]) -> int:
    """Transformer passes for a whole clip: its ``diffused`` frames at their strength, and each
    anchor after the first at ``anchor_strength`` in the anchor chain."""
    passes = frame_passes(clip)
    per_anchor = clip.steps - int(start_indices(np.array([clip.anchor_strength]), clip.steps)[0])
    return sum(passes[k] for k in diffused) + per_anchor * (len(segments) - 1)


def clip_plan(clip: ClipSpec) -> ClipPlan:
    segments = cut_segments(clip)
    diffused = diffused_frames(clip, segments)
    return ClipPlan(name=clip.name, num_frames=clip.num_frames, segments=segments,
                    passes=clip_passes(clip, segments, diffused), diffused=len(diffused) + len(segments) - 1,
                    prompt_keys=tuple(clip.prompts))


def cut_segments(clip: ClipSpec) -> tuple[Segment, ...]:
    length = clip.segment_length or clip.num_frames
    starts = range(0, clip.num_frames, length)
    return tuple(
        Segment(clip.name, i, start, min(start + length, clip.num_frames)) for i, start in enumerate(starts)
    )


def pixel_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved spec (as a plain tree) that changes rendered frames."""
    # precision joined the model later: its default is left out so earlier renders keep their job id
    model = {k: v for k, v in tree["model"].items() if not (k == "precision" and v == "bf16")}
    # and so did cadence: every frame diffused (1) is what every render before it did
    unchanged = {"cadence": 1}
    return {
        "version": PLAN_VERSION,
        "model": model,
        "width": tree["width"],
        "height": tree["height"],
        "clips": [
            {k: _pixel_motion(clip[k]) if k == "motion" else input_key(clip[k]) if k == "init_image" else clip[k]
             for k in (*RENDER_KEYS, "name", "num_frames", "prompts", "init_image")
             if unchanged.get(k, object()) != clip[k]}
            for clip in tree["clips"]
        ],
    }


def _pixel_motion(motion: Mapping[str, Any]) -> dict[str, Any]:
    """A 2d clip's motion without the camera's keys (at rest in 2d: see MOTION_3D_KEYS)."""
    if motion.get("mode", "2d") != "2d":
        return dict(motion)
    return {k: v for k, v in motion.items() if k not in MOTION_3D_KEYS}


def input_key(uri: str | None) -> str | None:
    """What of an input changes the frames: a local file's bytes (``sha256:...``), so a job keeps its
    id wherever its folder is and an edited picture is a new job; a remote one by its URI (reading
    S3 to plan would cost a download). A path that is not a regular file (missing, a pipe) stays a path."""
    path = local_path(uri) if uri else None
    if path is None or not path.is_file():
        return uri
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def job_id(spec: JobSpec) -> str:
    """12 hex digits of a hash over everything that changes the rendered frames."""
    canonical = json.dumps(pixel_tree(spec_to_dict(spec)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def tree_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two plain trees differ, e.g. ``clips[0].prompts.12``."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out += tree_diff(a.get(key), b.get(key), sub) if key in a and key in b else [sub]
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in tree_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "spec"]


def plan(spec: JobSpec) -> RenderPlan:
    ident = job_id(spec)
    clips = tuple(clip_plan(clip) for clip in spec.clips)
    return RenderPlan(
        job_name=spec.name,
        job_id=ident,
        output_dir=f"{spec.output.uri.rstrip('/')}/{spec.name}-{ident}",
        clips=clips,
        interpolation=spec.post.interpolation,
        fps=spec.fps,
        loop=spec.post.loop,
        crossfade=spec.post.crossfade_frames if spec.post.transition == "crossfade" and len(clips) > 1 else 0,
    )


def format_plan(render_plan: RenderPlan, spec: JobSpec) -> str:
    """A plan a person reads before spending GPU time: one row per clip, then the segments."""
    p = render_plan
    lines = [
        f"job {p.job_name}  id {p.job_id}  model {spec.model.name}  {spec.width}x{spec.height}  "
        f"{spec.steps} steps  {_g(spec.fps)} fps",
        f"output {p.output_dir}",
        "",
    ]
    header = ("clip", "frames", "segments", "passes", "seed", "strength", "prompts", "diffused")
    rows = [
        (c.name, str(c.num_frames), str(len(c.segments)), str(c.passes), str(clip.seed),
         _short(clip.strength), f"{len(c.prompt_keys)} at {_frames(c.prompt_keys)}", _diffused(c, clip.cadence))
        for c, clip in zip(p.clips, spec.clips)
    ]
    rows.append(("total", str(p.total_frames), str(len(p.segments)), str(p.total_passes), "", "", "",
                 str(p.total_diffused)))
    lines += format_table(header, rows, left=(0, 5, 6, 7))
    cameras = [f"{clip.name} 3d (depth {clip.motion.depth}, fov {_short(clip.motion.fov)})"
               for clip in spec.clips if clip.motion.mode == "3d"]
    if cameras:
        lines.append("motion: " + ", ".join(cameras))
    lines += ["", "chains (each is sequential; chains run in parallel, a clip's segments after its anchors)"]
    for c, clip in zip(p.clips, spec.clips):
        if c.anchors:
            lines.append(f"  {c.name}/anchors  frames {_frames(c.anchors)}  ({len(c.anchors)} anchors, "
                         f"anchor_strength {clip.anchor_strength:g}, blend {clip.blend})")
        for seg in c.segments:
            anchor = f"  from anchor {seg.start}" if c.anchors else ""
            lines.append(f"  {seg.clip}/{seg.index}  frames {seg.start}-{seg.stop - 1}  ({seg.num_frames}){anchor}")
    fps = spec.output.fps or p.fps * p.interpolation
    post = f"interpolation x{p.interpolation} {spec.post.interpolation_method}" if p.interpolation > 1 else "no interpolation"
    post += (", loop" if p.loop else "") + (f", crossfade {p.crossfade}" if p.crossfade else "")
    lines += ["", f"video {p.video_frames} frames ({post}), {p.video_frames / fps:.1f} s at {_g(fps)} fps, "
                  f"{spec.output.codec} crf {spec.output.crf}"]
    return "\n".join(lines)


def _diffused(clip: ClipPlan, cadence: int) -> str:
    return str(clip.diffused) + (f" (cadence {cadence})" if cadence > 1 else "")


def _g(x: float) -> str:
    return f"{x:g}"


def _short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _frames(keys: tuple[int, ...]) -> str:
    shown = ", ".join(str(k) for k in keys[:6])
    return shown + (", ..." if len(keys) > 6 else "")
