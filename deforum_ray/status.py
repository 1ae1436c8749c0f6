"""What a job folder holds: per-clip progress, checkpoints and problems, from any fsspec store
(the facts are read by :mod:`.post.facts`, which the job's page shows too).

``status`` reads and never writes: the stores it opens are read-only, and a problem it notices
(a marker that vouches for other bytes) is reported, not recorded; ``--html`` writes only the pages
(``post.report``). ``status --verify`` reads every
vouched object, checks its hash, and un-vouches each bad one and un-finishes what depends on it,
so that the next render repairs exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .post.facts import ClipStatus, JobStatus, StatusError, find_jobs, job_status, status_record
from .post.report import duration_text
from .store import RenderStore
from .table import format_table

__all__ = ["BadObject", "ClipStatus", "JobStatus", "StatusError", "find_jobs", "format_status", "job_status",
           "status_record", "verify"]


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


def format_status(status: JobStatus) -> str:
    lines = [f"job {status.job}  id {status.job_id}  at {status.url}", ""]
    header = ("clip", "frames", "anchors", "segments done", "last checkpoint", "problems")
    rows = [(c.name, f"{c.frames_done}/{c.num_frames}", f"{c.anchors_done}/{c.anchors}" if c.anchors else "-",
             f"{c.segments_done}/{c.segments}",
             "-" if c.last_checkpoint is None else str(c.last_checkpoint), str(c.problems)) for c in status.clips]
    lines += format_table(header, rows)
    state = "complete" if status.complete else "incomplete: run the same render command again to resume"
    if status.eta_s is not None:
        state += f" (while rendering: about {duration_text(status.eta_s)} left at the last minute's rate)"
    lines += ["", f"frames {state}", f"video {status.video or 'not encoded yet'}"]
    lines += [f"  clip {name}: {url}" for name, url in status.clip_videos]
    lines += [f"  contact sheet {name}: {url}" for name, url in status.contact_sheets]
    for event in status.problems[-5:]:
        lines.append(f"problem: {event['kind']} {event['object']}: {event['message']}")
    return "\n".join(lines)
