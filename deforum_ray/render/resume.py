"""Where a chain stands in the store, and the DONE markers that say a segment is finished.

A chain writes its frames (PNG and latent), a checkpoint of the whole loop state every
``checkpoint_every`` frames, and a DONE marker for each segment once its last frame is in
(``render.sinks``). Resuming finds the first frame the store cannot vouch for and restarts from the
newest good checkpoint at or before it, so a resumed chain repeats at most ``checkpoint_every``
frames and produces exactly the frames an uninterrupted one would. An anchor chain resumes after
the last of its leading anchors the store holds intact (each anchor is its own checkpoint).
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, replace

from ..frame.loop import LoopState, SegmentEnds
from ..job.plan import ChainKind, ChainTask, Segment
from ..store import RenderStore


@dataclass(frozen=True)
class ResumePoint:
    """Where a chain continues: ``state`` is None when nothing is left to render."""

    state: LoopState | None
    frames_done: int  # frames (anchors, for an anchor chain) before the resume point, already stored
    from_checkpoint: int | None


def find_resume_point(store: RenderStore, task: ChainTask, fresh: bool = False) -> ResumePoint:
    """The newest good checkpoint at or before the first frame the store cannot vouch for."""
    initial = LoopState(task.start)
    if task.kind is ChainKind.ANCHORS:
        return _anchor_resume_point(store, task, fresh)
    if fresh:
        return ResumePoint(initial, 0, None)
    if all(done_by_listing(store, task.clip, seg) for seg in task.segments):
        return ResumePoint(None, task.num_frames, None)
    frames = range(task.start, task.stop)
    rels = [(store.frame_rel(task.clip, task.segment_of(n), n), store.latent_rel(task.clip, task.segment_of(n), n))
            for n in frames]
    fetched = store.get_many([rel for pair in rels for rel in pair])
    missing = next((n for n, pair in zip(frames, rels) if any(fetched[rel] is None for rel in pair)), None)
    if missing is None:
        for seg in task.segments:
            if store.get(store.done_rel(task.clip, seg.index)) is None:  # killed between last frame and DONE
                write_done(store, task.clip, seg, {})
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


def chain_standing(store: RenderStore, task: ChainTask, fresh: bool = False) -> tuple[bool, int]:
    """Where a frame chain stands, from listings alone: (finished, frames done before the point
    it would resume from). Nothing is downloaded: the worker that takes an unfinished chain
    verifies the bytes (:func:`find_resume_point`), so the driver need not do it too."""
    if fresh:
        return False, 0
    if all(done_by_listing(store, task.clip, seg) for seg in task.segments):
        return True, task.num_frames
    listed: set[int] = set()
    for seg in task.segments:
        sizes = listed_sizes(store, task.clip, seg)
        listed |= {n for n, pair in sizes.items() if None not in pair}
    missing = next((n for n in range(task.start, task.stop) if n not in listed), task.stop)
    checkpoints = [c for seg in task.segments for c in store.checkpoint_frames(task.clip, seg.index)
                   if task.start < c <= missing]
    return False, max(checkpoints, default=task.start) - task.start


def _anchor_resume_point(store: RenderStore, task: ChainTask, fresh: bool) -> ResumePoint:
    """After the last of the leading anchors the store holds intact (each anchor is its own
    checkpoint). Every one is read: a segment starts from any of them."""
    anchors = task.anchors
    if fresh:
        return ResumePoint(LoopState(0), 0, None)
    stored = set(store.anchor_frames(task.clip))
    before: LoopState | None = None
    for i, anchor in enumerate(anchors):
        state = load_anchor(store, task.clip, anchor) if anchor in stored else None
        expected = anchors[i + 1] if i + 1 < len(anchors) else task.stop
        if state is None or state.frame != expected:
            if state is not None:
                store.event("corrupt", store.anchor_rel(task.clip, anchor),
                            f"holds the state before frame {state.frame}, expected {expected}")
            return ResumePoint(before or LoopState(0), i, anchors[i - 1] if i else None)
        before = state
    return ResumePoint(None, len(anchors), anchors[-1])


def load_anchor(store: RenderStore, clip: str, frame: int) -> LoopState | None:
    """The anchor chain's state after anchor ``frame`` (its ``frame`` is the next anchor)."""
    tensors = store.get_tensors(store.anchor_rel(clip, frame))
    return None if tensors is None else LoopState.from_tensors(tensors)


def segment_ends(store: RenderStore, task: ChainTask, num_frames: int, blend: int) -> SegmentEnds:
    """A segment's anchors from the store: the one it starts on and the one it eases toward."""
    seg = task.segments[0]
    first = load_anchor(store, task.clip, seg.start)
    if first is None:
        raise RuntimeError(f"anchor {seg.start} is missing from the store; render the anchor chain first")
    following = load_anchor(store, task.clip, seg.stop) if seg.stop < num_frames else None
    if seg.stop < num_frames and following is None:
        raise RuntimeError(f"anchor {seg.stop} is missing from the store; render the anchor chain first")
    return SegmentEnds(replace(first, frame=seg.start + 1), None if following is None else following.latent,
                       seg.stop, blend, None if following is None else following.depth)


def write_done(store: RenderStore, clip: str, seg: Segment, known: dict[int, str]) -> None:
    """DONE marker for a segment, with every frame's hash (from this run where it rendered the
    frame, else from the store) and the sizes of every frame and latent (for the fast resume)."""
    need = [n for n in range(seg.start, seg.stop) if n not in known]
    fetched = store.get_many([store.frame_rel(clip, seg.index, n) for n in need])
    hashes = dict(known)
    for n in need:
        data = fetched[store.frame_rel(clip, seg.index, n)]
        if data is None:
            return  # not complete after all; the next run renders it
        hashes[n] = hashlib.sha256(data).hexdigest()
    sizes = listed_sizes(store, clip, seg)
    if any(None in pair for pair in sizes.values()):
        return
    body = {"frames": seg.num_frames, "sha256": {str(n): hashes[n] for n in range(seg.start, seg.stop)},
            "size": {str(n): sizes[n] for n in range(seg.start, seg.stop)}}
    store.write_json(store.done_rel(clip, seg.index), body)


def listed_sizes(store: RenderStore, clip: str, seg: Segment) -> dict[int, list[int | None]]:
    """[PNG size, latent size] of every frame of a segment that the listings show vouched."""
    pngs = store.listed_sizes(posixpath.dirname(store.frame_rel(clip, seg.index, seg.start)))
    latents = store.listed_sizes(posixpath.dirname(store.latent_rel(clip, seg.index, seg.start)))
    return {n: [pngs.get(posixpath.basename(store.frame_rel(clip, seg.index, n))),
                latents.get(posixpath.basename(store.latent_rel(clip, seg.index, n)))]
            for n in range(seg.start, seg.stop)}


def done_by_listing(store: RenderStore, clip: str, seg: Segment) -> bool:
    """A finished segment, known from its DONE and two listings without downloading a frame:
    every frame and latent is vouched at the size DONE recorded. Their bytes are verified where
    they are read, by the final stage, which drops the DONE of a segment it finds damaged."""
    done = store.read_json(store.done_rel(clip, seg.index))
    recorded = done.get("size") if isinstance(done, dict) else None
    if not recorded:
        return False  # a DONE from before sizes were recorded: the full check decides
    return all(recorded.get(str(n)) == pair for n, pair in listed_sizes(store, clip, seg).items())
