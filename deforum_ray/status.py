"""What a job folder holds: per-clip progress, checkpoints and problems, from any fsspec store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .store import MARKER, RenderStore
from .table import format_table


@dataclass(frozen=True)
class ClipStatus:
    name: str
    frames_done: int
    num_frames: int
    segments_done: int
    segments: int
    last_checkpoint: int | None
    problems: int
    anchors_done: int = 0
    anchors: int = 0


@dataclass(frozen=True)
class JobStatus:
    job: str
    job_id: str
    url: str
    clips: tuple[ClipStatus, ...]
    video: str | None
    problems: tuple[dict[str, Any], ...]
    clip_videos: tuple[tuple[str, str], ...] = ()
    contact_sheets: tuple[tuple[str, str], ...] = ()

    @property
    def complete(self) -> bool:
        return all(c.frames_done == c.num_frames for c in self.clips)


def job_status(store: RenderStore) -> JobStatus:
    manifest = store.read_json("manifest.json")
    if manifest is None:
        raise FileNotFoundError(f"{store.url()}: no manifest.json: not a deforum-ray job folder")
    events = store.events()
    clips = []
    for clip in manifest["clips"]:
        segments = clip["segments"]
        done = sum(len(store.frames_done(clip["name"], s["index"])) for s in segments)
        finished = sum(1 for s in segments if store.exists(store.done_rel(clip["name"], s["index"]) + MARKER))
        checkpoints = [c for s in segments for c in store.checkpoint_frames(clip["name"], s["index"])]
        anchors = clip.get("anchors", [])
        anchors_done = len(set(anchors) & set(store.anchor_frames(clip["name"]))) if anchors else 0
        problems = sum(1 for e in events if e["object"].startswith((f"segments/{clip['name']}/", f"anchors/{clip['name']}/")))
        clips.append(ClipStatus(clip["name"], done, clip["num_frames"], finished, len(segments),
                                max(checkpoints) if checkpoints else None, problems, anchors_done, len(anchors)))
    video_rel = f"{manifest['job']}.mp4"
    video = store.url(video_rel) if store.exists(video_rel + MARKER) else None
    final = store.read_json("final.json") or {}
    made = lambda rels: tuple((k, store.url(v)) for k, v in rels.items() if store.exists(v + MARKER))  # noqa: E731
    return JobStatus(manifest["job"], manifest["job_id"], store.url(), tuple(clips), video, tuple(events),
                     made(final.get("clips", {})), made(final.get("contact_sheets", {})))


def find_jobs(uri: str, storage_options: dict[str, Any] | None = None) -> list[RenderStore]:
    """The job folder at ``uri``, or every job folder directly under it."""
    store = RenderStore(uri, storage_options or {})
    if store.exists("manifest.json" + MARKER):
        return [store]
    try:
        entries = store.fs.ls(store.root, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    names = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
    return [child for child in (store.child(n) for n in names) if child.exists("manifest.json" + MARKER)]


def format_status(status: JobStatus) -> str:
    lines = [f"job {status.job}  id {status.job_id}  at {status.url}", ""]
    header = ("clip", "frames", "anchors", "segments done", "last checkpoint", "problems")
    rows = [(c.name, f"{c.frames_done}/{c.num_frames}", f"{c.anchors_done}/{c.anchors}" if c.anchors else "-",
             f"{c.segments_done}/{c.segments}",
             "-" if c.last_checkpoint is None else str(c.last_checkpoint), str(c.problems)) for c in status.clips]
    lines += format_table(header, rows)
    state = "complete" if status.complete else "incomplete: run the same render command again to resume"
    lines += ["", f"frames {state}", f"video {status.video or 'not encoded yet'}"]
    lines += [f"  clip {name}: {url}" for name, url in status.clip_videos]
    lines += [f"  contact sheet {name}: {url}" for name, url in status.contact_sheets]
    for event in status.problems[-5:]:
        lines.append(f"problem: {event['kind']} {event['object']}: {event['message']}")
    return "\n".join(lines)
