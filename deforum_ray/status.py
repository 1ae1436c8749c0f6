"""What a job folder holds: per-clip progress, checkpoints and problems, from any fsspec store.

``status`` reads and never writes: the stores it opens are read-only, and a problem it notices
(a marker that vouches for other bytes) is reported, not recorded. ``status --verify`` reads every
vouched object, checks its hash, and un-vouches each bad one and un-finishes what depends on it,
so that the next render repairs exactly that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

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


class StatusError(RuntimeError):
    """A job folder that cannot be read; one line."""


def job_status(store: RenderStore) -> JobStatus:
    manifest = store.read_json("manifest.json")
    if manifest is None:
        bad = [e for e in store.noticed if e["object"] == "manifest.json"]
        why = f"manifest.json is damaged ({bad[0]['message']})" if bad else "no manifest.json"
        raise StatusError(f"{store.url()}: {why}: not a readable deforum-ray job folder")
    # Read (one concurrent fetch), not only listed: a damaged DONE is not done.
    done_objects = store.get_many([store.done_rel(clip["name"], s["index"])
                                   for clip in manifest["clips"] for s in clip["segments"]])
    events = store.events()
    clips = []
    for clip in manifest["clips"]:
        segments = clip["segments"]
        done = sum(len(store.frames_done(clip["name"], s["index"])) for s in segments)
        finished = sum(1 for s in segments if done_objects[store.done_rel(clip["name"], s["index"])] is not None)
        checkpoints = [c for s in segments for c in store.checkpoint_frames(clip["name"], s["index"])]
        anchors = clip.get("anchors", [])
        anchors_done = len(set(anchors) & set(store.anchor_frames(clip["name"]))) if anchors else 0
        problems = sum(1 for e in events if e["object"].startswith((f"segments/{clip['name']}/", f"anchors/{clip['name']}/")))
        clips.append(ClipStatus(clip["name"], done, clip["num_frames"], finished, len(segments),
                                max(checkpoints) if checkpoints else None, problems, anchors_done, len(anchors)))
    video_rel = f"{manifest['job']}.mp4"
    video = store.url(video_rel) if store.intact(video_rel) else None  # there, at the size its marker says
    final = store.read_json("final.json") or {}
    made = lambda rels: tuple((k, store.url(v)) for k, v in rels.items() if store.intact(v))  # noqa: E731
    return JobStatus(manifest["job"], manifest["job_id"], store.url(), tuple(clips), video, tuple(events),
                     made(final.get("clips", {})), made(final.get("contact_sheets", {})))


def find_jobs(uri: str, storage_options: dict[str, Any] | None = None, read_only: bool = True) -> list[RenderStore]:
    """The job folder at ``uri``, or every job folder directly under it (read-only unless asked)."""
    store = RenderStore(uri, storage_options or {}, read_only)
    if store.exists("manifest.json" + MARKER):
        return [store]
    try:
        entries = store.fs.ls(store.root, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    names = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
    return [child for child in (store.child(n) for n in names) if child.exists("manifest.json" + MARKER)]


@dataclass(frozen=True)
class BadObject:
    rel: str
    problem: str  # what reading it found
    unfinished: tuple[str, ...]  # what was un-finished so that the next render repairs it


def verify(store: RenderStore, progress: Callable[[int, int], None] | None = None, batch: int = 32) -> list[BadObject]:
    """Read every vouched object of a job folder and check it against its marker. Each bad one is
    un-vouched (its marker removed, so it counts as missing) and what depends on it un-finished:
    its segment's DONE (a frame, latent or checkpoint), every segment of its clip (an anchor), or
    ``final.json`` (a video or contact sheet), so that the next render repairs it. A problem is
    also recorded as an event."""
    manifest = store.read_json("manifest.json") or {"clips": []}
    segments = {c["name"]: [s["index"] for s in c["segments"]] for c in manifest["clips"]}
    rels = store.vouched_objects()
    bad: list[BadObject] = []
    for start in range(0, len(rels), batch):
        chunk = rels[start : start + batch]
        before = len(store.noticed)
        found = store.get_many(chunk)  # hashes checked; a mismatch is recorded as an event
        for rel in (r for r in chunk if found[r] is None):
            problem = next((e["message"] for e in store.noticed[before:] if e["object"] == rel), "does not match its marker")
            bad.append(BadObject(rel, problem, _unfinish(store, rel, segments)))
        if progress is not None:
            progress(min(start + batch, len(rels)), len(rels))
    return bad


def _unfinish(store: RenderStore, rel: str, segments: dict[str, list[int]]) -> tuple[str, ...]:
    parts = rel.split("/")
    store.discard(rel)
    if parts[0] == "segments" and len(parts) > 3:
        undone = [store.done_rel(parts[1], int(parts[2]))]
    elif parts[0] == "anchors" and len(parts) > 2:
        undone = [store.done_rel(parts[1], i) for i in segments.get(parts[1], [])]
    elif len(parts) == 1 and rel not in ("manifest.json", "spec.yaml", "final.json"):
        undone = ["final.json"]  # a video or contact sheet: encoded again
    else:
        undone = []
    for done in undone:
        store.discard(done)
    return tuple(u for u in undone if u != rel)


def status_record(status: JobStatus) -> dict[str, Any]:
    """A job's status as plain data, for ``status --json`` (cron, dashboards)."""
    return {"job": status.job, "job_id": status.job_id, "url": status.url, "complete": status.complete,
            "frames_done": sum(c.frames_done for c in status.clips), "frames": sum(c.num_frames for c in status.clips),
            "video": status.video, "clip_videos": dict(status.clip_videos),
            "contact_sheets": dict(status.contact_sheets), "clips": [dataclasses.asdict(c) for c in status.clips],
            "problems": list(status.problems)}


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
