"""What a job folder holds, read from any fsspec store: progress per clip and chain, the runs that
rendered it (from the run log), the outputs made and every problem recorded. ``status`` prints
these facts (a table, ``--json``), and the report page (:mod:`.report`) shows them.

Reading changes nothing: a problem noticed while reading (a marker that vouches for other bytes)
is kept in the store's ``noticed`` list of a read-only store, not recorded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..store import MARKER, RenderStore

RATE_WINDOW_S = 60.0  # the time left is estimated from the frames logged in the last minute of the run log


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
class ChainStatus:
    """One segment of a clip (a clip that is one chain has one)."""

    label: str  # clip/segment
    frames_done: int
    frames: int
    latest: str | None  # the newest stored frame's PNG, relative to the job folder
    workers: tuple[str, ...] = ()  # the workers that rendered it, first first: more than one means resumed


@dataclass(frozen=True)
class WorkerRun:
    """A worker's part of the run log: one per worker process, so each render run (and each
    restarted worker) is its own."""

    worker: str
    frames: int
    diffused: int
    started: float  # unix time of its first frame, less that frame's seconds
    ended: float  # unix time of its last frame

    @property
    def fps(self) -> float:
        span = self.ended - self.started
        return self.frames / span if span > 0 else 0.0


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
    chains: tuple[ChainStatus, ...] = ()
    runs: tuple[WorkerRun, ...] = ()
    eta_s: float | None = None  # time left at the last minute's rate; None when done or unknown
    starts: tuple[dict[str, Any], ...] = ()  # each render's start, phase by phase (store.starts), oldest first

    @property
    def complete(self) -> bool:
        return all(c.frames_done == c.num_frames for c in self.clips)

    @property
    def frames_done(self) -> int:
        return sum(c.frames_done for c in self.clips)

    @property
    def frames(self) -> int:
        return sum(c.num_frames for c in self.clips)

    def rel(self, url: str) -> str:
        """A URL of this job's folder relative to it (what a page in the folder links to)."""
        return url[len(self.url):].lstrip("/") if url.startswith(self.url) else url


class StatusError(RuntimeError):
    """A job folder that cannot be read; one line."""


def job_status(store: RenderStore, rows: list[dict[str, Any]] | None = None) -> JobStatus:
    """Every fact of a job folder; ``rows``: its run log, when the caller has read it already."""
    manifest = store.read_json("manifest.json")
    if manifest is None:
        bad = [e for e in store.noticed if e["object"] == "manifest.json"]
        why = f"manifest.json is damaged ({bad[0]['message']})" if bad else "no manifest.json"
        raise StatusError(f"{store.url()}: {why}: not a readable deforum-ray job folder")
    # Read (one concurrent fetch), not only listed: a damaged DONE is not done.
    done_objects = store.get_many([store.done_rel(clip["name"], s["index"])
                                   for clip in manifest["clips"] for s in clip["segments"]])
    events = store.events()
    rows = store.read_runlog() if rows is None else rows
    workers: dict[tuple[str, int], list[str]] = {}
    for row in rows:  # in time order
        seen = workers.setdefault((row["clip"], row["segment"]), [])
        if row["worker"] not in seen:
            seen.append(row["worker"])
    clips, chains = [], []
    for clip in manifest["clips"]:
        name, segments = clip["name"], clip["segments"]
        stored = {s["index"]: store.frames_done(name, s["index"]) for s in segments}
        done = sum(len(frames) for frames in stored.values())
        finished = sum(1 for s in segments if done_objects[store.done_rel(name, s["index"])] is not None)
        checkpoints = [c for s in segments for c in store.checkpoint_frames(name, s["index"])]
        anchors = clip.get("anchors", [])
        anchors_done = len(set(anchors) & set(store.anchor_frames(name))) if anchors else 0
        problems = sum(1 for e in events if e["object"].startswith((f"segments/{name}/", f"anchors/{name}/")))
        clips.append(ClipStatus(name, done, clip["num_frames"], finished, len(segments),
                                max(checkpoints) if checkpoints else None, problems, anchors_done, len(anchors)))
        for s in segments:
            frames = stored[s["index"]]
            latest = store.frame_rel(name, s["index"], max(frames)) if frames else None
            chains.append(ChainStatus(f"{name}/{s['index']}", len(frames), s["stop"] - s["start"], latest,
                                      tuple(workers.get((name, s["index"]), ()))))
    video_rel = f"{manifest['job']}.mp4"
    video = store.url(video_rel) if store.intact(video_rel) else None  # there, at the size its marker says
    final = store.read_json("final.json") or {}
    order = [clip["name"] for clip in manifest["clips"]]  # the spec's, as the video plays them
    made = lambda rels: tuple((k, store.url(rels[k])) for k in sorted(rels, key=order.index)  # noqa: E731
                              if k in order and store.intact(rels[k]))
    status = JobStatus(manifest["job"], manifest["job_id"], store.url(), tuple(clips), video, tuple(events),
                       made(final.get("clips", {})), made(final.get("contact_sheets", {})), tuple(chains),
                       worker_runs(rows), starts=tuple(store.starts()))
    return dataclasses.replace(status, eta_s=None if status.complete else time_left(rows, status.frames - status.frames_done))


def frame_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run log's rows of frames: an anchor's row (segment -1) is not a frame of the video."""
    return [row for row in rows if row["segment"] >= 0]


def worker_runs(rows: list[dict[str, Any]]) -> tuple[WorkerRun, ...]:
    """Each worker's frames and span, in the order they started."""
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for row in frame_rows(rows):
        by_worker.setdefault(row["worker"], []).append(row)
    runs = [WorkerRun(worker, len(own), sum(1 for r in own if r.get("diffused", True)),
                      own[0]["timestamp"] - own[0]["seconds"], own[-1]["timestamp"])
            for worker, own in by_worker.items()]
    return tuple(sorted(runs, key=lambda r: r.started))


def time_left(rows: list[dict[str, Any]], remaining: int) -> float | None:
    """Seconds to render ``remaining`` frames at the rate of the run log's last minute (every
    worker together), or None without two frames in it."""
    stamps = sorted(r["timestamp"] for r in frame_rows(rows))
    if len(stamps) < 2:
        return None
    recent = [t for t in stamps if t >= stamps[-1] - RATE_WINDOW_S]
    span = recent[-1] - recent[0]
    if len(recent) < 2 or span <= 0:
        return None
    return remaining / ((len(recent) - 1) / span)


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


def status_record(status: JobStatus) -> dict[str, Any]:
    """A job's status as plain data, for ``status --json`` (cron, dashboards): the facts its page shows."""
    return {"job": status.job, "job_id": status.job_id, "url": status.url, "complete": status.complete,
            "frames_done": status.frames_done, "frames": status.frames, "eta_s": status.eta_s,
            "video": status.video, "clip_videos": dict(status.clip_videos),
            "contact_sheets": dict(status.contact_sheets), "clips": [dataclasses.asdict(c) for c in status.clips],
            "chains": [dataclasses.asdict(c) for c in status.chains],
            "runs": [{**dataclasses.asdict(r), "fps": r.fps} for r in status.runs],
            "problems": list(status.problems), "starts": list(status.starts)}
