"""One job's output folder on any fsspec filesystem (local path, s3://, memory://).

Layout (DESIGN.md section 4)::

    <output.uri>/<job_name>-<job_id>/
      spec.yaml  manifest.json
      anchors/<clip>/<frame:06d>.safetensors               loop state after anchor <frame>
      segments/<clip>/<seg>/frames/<frame:06d>.png
      segments/<clip>/<seg>/latents/<frame:06d>.safetensors  the frame's latent (float16), for latent interpolation
      segments/<clip>/<seg>/ckpt/<frame:06d>.safetensors   loop state before <frame>
      segments/<clip>/<seg>/DONE.json
      runlog/<worker>-<time>-<n>.parquet                   one row per rendered frame (segment -1: an anchor)
      events/<time>-<n>.json                               problems found (corrupt objects, failures)
      starts/<time>-<n>.json                               a render's start, phase by phase (render.start)
      logs/<worker>.log                                    the model libraries' warnings and notes on a worker
      <job_name>.mp4

Every object is written whole, then a marker ``<object>.ok`` naming its size and SHA-256 is
written after it. A reader trusts only bytes a marker vouches for: an object whose write was cut
short has no marker (or a mismatching one) and is treated as missing. A write never replaces a
good object with a partial one: on a local disk each object and marker is written to a temporary
file beside it and renamed over the old one (atomic), and an object store's PUT (S3) replaces an
object only once the new one is whole. So a full disk or a killed process leaves the previous
object and its marker as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import fsspec
import numpy as np

MARKER = ".ok"
TEMPORARY = ".tmp"  # a local write in progress: <name>.<random>.tmp beside its object, never vouched for
# chains: advanced together; diffused: denoised, not warped between cadence keys (empty in logs written
# before cadence); gpu_peak_gib: the worker's peak GPU memory reserved so far (empty on a CPU)
RUNLOG_COLUMNS = ("clip", "segment", "frame", "worker", "chains", "diffused", "seconds", "timestamp", "gpu_peak_gib")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RenderStore:
    """Reads and writes the objects of one job folder."""

    uri: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    # read_only: a reader that must change nothing (``status``): writes raise, and the problems it
    # notices are kept in ``noticed`` only (a writer records them as events too)
    read_only: bool = False
    noticed: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uri = self.uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **dict(self.storage_options))
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        self.local = "file" in protocols

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def url(self, rel: str = "") -> str:
        """What to show a user: a plain path for local files, else the full URI."""
        if self.local:
            return self.path(rel)
        return f"{self.uri}/{rel}" if rel else self.uri  # as the user wrote it

    def child(self, name: str) -> "RenderStore":
        return RenderStore(f"{self.uri}/{name}", self.storage_options, self.read_only)

    # -- whole objects, vouched for by markers -------------------------------------------------
    def put(self, rel: str, data: bytes) -> str:
        """Write ``data`` whole, then its marker; returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(rel, data)
        self._write(rel + MARKER, json.dumps({"size": len(data), "sha256": digest}).encode())
        return digest

    def get(self, rel: str) -> bytes | None:
        """The object's bytes if its marker vouches for them; None if missing, unfinished or corrupt
        (a corrupt object is recorded as an event)."""
        return self.get_many([rel])[rel]

    def get_many(self, rels: Sequence[str]) -> dict[str, bytes | None]:
        """Like :meth:`get` for many objects, fetched concurrently where the filesystem can."""
        if not rels:
            return {}
        paths = [self.path(r) for r in rels] + [self.path(r + MARKER) for r in rels]
        fetched = self.fs.cat(paths, on_error="return")
        out: dict[str, bytes | None] = {}
        for rel in rels:
            data, marker = fetched.get(self.path(rel)), fetched.get(self.path(rel + MARKER))
            out[rel] = self._vouched(rel, data, marker)
        return out

    def _vouched(self, rel: str, data: Any, marker: Any) -> bytes | None:
        if not isinstance(marker, bytes):
            return None  # never finished: not an error, just not there
        try:
            expected = json.loads(marker)
        except ValueError:
            self.event("corrupt", rel + MARKER, "marker is not JSON")
            return None
        if not isinstance(data, bytes):
            self.event("missing", rel, "marker present but object missing")
            return None
        if len(data) != expected.get("size"):
            self.event("corrupt", rel, f"size {len(data)} != {expected.get('size')} (truncated?)")
            return None
        if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
            self.event("corrupt", rel, "content hash mismatch")
            return None
        return data

    def vouched_names(self, rel_dir: str) -> list[str]:
        """Names of the objects in a folder that have a marker (a listing; contents not checked)."""
        try:
            # refresh: another process (a worker, an earlier run) may have written since we last looked
            entries = self.fs.ls(self.path(rel_dir), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = {posixpath.basename(e.rstrip("/")) for e in entries}
        return sorted(n[: -len(MARKER)] for n in names if n.endswith(MARKER) and n[: -len(MARKER)] in names)

    def listed_sizes(self, rel_dir: str) -> dict[str, int]:
        """Sizes of the objects in a folder that have a marker, from one listing (nothing read)."""
        try:
            entries = self.fs.ls(self.path(rel_dir), detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        sizes = {posixpath.basename(e["name"].rstrip("/")): e.get("size") for e in entries}
        return {n: int(size) for n, size in sizes.items() if n + MARKER in sizes and size is not None}

    def discard(self, rel: str) -> None:
        """Stop vouching for an object: its marker goes, so every reader treats it as missing."""
        self._refuse_if_read_only(rel)
        try:
            self.fs.rm(self.path(rel + MARKER))
        except FileNotFoundError:
            pass

    def _refuse_if_read_only(self, rel: str) -> None:
        if self.read_only:
            raise PermissionError(f"{self.url(rel)}: this store was opened read-only")

    def _write(self, rel: str, data: bytes) -> None:
        self._refuse_if_read_only(rel)
        path = self.path(rel)
        if self.local:
            replace_local_file(path, lambda handle: handle.write(data))
            return
        with self.fs.open(path, "wb") as handle:
            handle.write(data)

    # -- JSON and text, vouched like everything else ------------------------------------------
    def write_json(self, rel: str, value: Any) -> None:
        self.put(rel, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        data = self.get(rel)
        return None if data is None else json.loads(data)

    def write_text(self, rel: str, text: str) -> None:
        self.put(rel, text.encode("utf-8"))

    def put_file(self, local_path: str, rel: str) -> None:
        """Upload a finished local file (the video), then its marker."""
        self._refuse_if_read_only(rel)
        with open(local_path, "rb") as handle:
            digest = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        path = self.path(rel)
        if self.local:
            with open(local_path, "rb") as source:
                replace_local_file(path, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))
        else:
            self.fs.put_file(local_path, path)
        marker = {"size": os.path.getsize(local_path), "sha256": digest.hexdigest()}
        self._write(rel + MARKER, json.dumps(marker).encode())

    def intact(self, rel: str) -> bool:
        """The object is there at the size its marker names (cheap: no download, no hash)."""
        self.fs.invalidate_cache(posixpath.dirname(self.path(rel)))
        try:
            expected = json.loads(self.fs.cat_file(self.path(rel + MARKER)))["size"]
            return int(self.fs.info(self.path(rel))["size"]) == expected
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return False

    def exists(self, rel: str) -> bool:
        path = self.path(rel)
        self.fs.invalidate_cache(posixpath.dirname(path))
        return self.fs.exists(path)

    # -- layout ---------------------------------------------------------------------------------
    @staticmethod
    def segment_rel(clip: str, segment: int) -> str:
        return f"segments/{clip}/{segment}"

    @classmethod
    def frame_rel(cls, clip: str, segment: int, frame: int) -> str:
        return f"{cls.segment_rel(clip, segment)}/frames/{frame:06d}.png"

    @classmethod
    def latent_rel(cls, clip: str, segment: int, frame: int) -> str:
        return f"{cls.segment_rel(clip, segment)}/latents/{frame:06d}.safetensors"

    @classmethod
    def checkpoint_rel(cls, clip: str, segment: int, frame: int) -> str:
        return f"{cls.segment_rel(clip, segment)}/ckpt/{frame:06d}.safetensors"

    @classmethod
    def done_rel(cls, clip: str, segment: int) -> str:
        return f"{cls.segment_rel(clip, segment)}/DONE.json"

    # -- frames -----------------------------------------------------------------------------
    def write_frame(self, clip: str, segment: int, frame: int, rgb: np.ndarray) -> str:
        return self.put_frame(clip, segment, frame, encode_png(rgb))

    def put_frame(self, clip: str, segment: int, frame: int, png: bytes) -> str:
        """An already encoded frame (the write queue encodes on other threads)."""
        return self.put(self.frame_rel(clip, segment, frame), png)

    def read_frame(self, clip: str, segment: int, frame: int) -> np.ndarray:
        data = self.get(self.frame_rel(clip, segment, frame))
        if data is None:
            raise FileNotFoundError(f"{self.url(self.frame_rel(clip, segment, frame))}: missing or corrupt")
        return decode_png(data)

    def frames_done(self, clip: str, segment: int) -> list[int]:
        """Frames with a marker (from a listing: cheap, contents not checked)."""
        return [int(n[:-4]) for n in self.vouched_names(f"{self.segment_rel(clip, segment)}/frames") if n.endswith(".png")]

    # -- checkpoints and anchors: loop states as safetensors ------------------------------------
    def put_tensors(self, rel: str, tensors: Mapping[str, Any]) -> None:
        from safetensors.torch import save

        self.put(rel, save(dict(tensors)))

    def get_tensors(self, rel: str) -> dict[str, Any] | None:
        from safetensors.torch import load

        data = self.get(rel)
        if data is None:
            return None
        try:
            return load(data)
        except Exception as exc:  # vouched bytes that do not parse: written wrong, never use
            self.event("corrupt", rel, f"unreadable safetensors: {exc}")
            return None

    def put_checkpoint(self, clip: str, segment: int, frame: int, tensors: Mapping[str, Any]) -> None:
        self.put_tensors(self.checkpoint_rel(clip, segment, frame), tensors)

    def checkpoint_frames(self, clip: str, segment: int) -> list[int]:
        names = self.vouched_names(f"{self.segment_rel(clip, segment)}/ckpt")
        return [int(n.split(".")[0]) for n in names if n.endswith(".safetensors")]

    def get_checkpoint(self, clip: str, segment: int, frame: int) -> dict[str, Any] | None:
        return self.get_tensors(self.checkpoint_rel(clip, segment, frame))

    @staticmethod
    def anchor_rel(clip: str, frame: int) -> str:
        return f"anchors/{clip}/{frame:06d}.safetensors"

    def anchor_frames(self, clip: str) -> list[int]:
        return [int(n.split(".")[0]) for n in self.vouched_names(f"anchors/{clip}") if n.endswith(".safetensors")]

    # -- run log and events -------------------------------------------------------------------
    def put_runlog(self, rows: Sequence[Mapping[str, Any]], worker: str) -> None:
        if not rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({column: [row.get(column) for row in rows] for column in RUNLOG_COLUMNS})
        buffer = pa.BufferOutputStream()  # Arrow's own buffers, never a Python file: see read_runlog
        pq.write_table(table, buffer)
        name = f"{_safe(worker)}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        self.put(f"runlog/{name}", buffer.getvalue().to_pybytes())

    def read_runlog(self) -> list[dict[str, Any]]:
        """One row per stored frame (segment -1: an anchor), in time order: the row of its latest
        rendering (a run killed between logging a frame and its checkpoint renders it again)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        names = self.vouched_names("runlog")
        for data in self.get_many([f"runlog/{n}" for n in names]).values():
            if data is not None:
                # An Arrow buffer, not io.BytesIO: Arrow frees a Python file's reader on one of its
                # own threads, which must take the GIL; at interpreter exit that aborts the process.
                rows.extend(pq.read_table(pa.BufferReader(data)).to_pylist())
        latest = {(r["clip"], r["segment"], r["frame"]): r for r in sorted(rows, key=lambda r: r["timestamp"])}
        return sorted(latest.values(), key=lambda r: r["timestamp"])

    def event(self, kind: str, rel: str, message: str) -> None:
        """Record a problem so that ``status`` and the user can see it; never raises."""
        record = {"kind": kind, "object": rel, "message": message, "timestamp": time.time(), "worker": worker_name()}
        self.noticed.append(record)  # what this reader found, for its caller (status --verify)
        if self.read_only:
            return
        try:
            self.put(f"events/{time.time_ns()}-{uuid.uuid4().hex[:8]}.json", json.dumps(record).encode())
        except Exception:  # a store that cannot take an event cannot take frames either; that surfaces there
            pass

    def events(self) -> list[dict[str, Any]]:
        """Problems recorded in the store, and those this reader noticed (read-only)."""
        names = self.vouched_names("events")
        found = [json.loads(d) for d in self.get_many([f"events/{n}" for n in names]).values() if d is not None]
        return sorted(found + (self.noticed if self.read_only else []), key=lambda e: e["timestamp"])

    def put_library_log(self, worker: str, text: str) -> None:
        """A worker's lines from the model libraries (``render.start.LibraryLog``), replaced as they grow."""
        self.write_text(f"logs/{_safe(worker)}.log", text)

    def put_start(self, record: Mapping[str, Any]) -> None:
        """Keep one render's start (its phases and seconds: ``render.start``) as an object of its own."""
        self.put(f"starts/{time.time_ns()}-{uuid.uuid4().hex[:8]}.json", json.dumps(record).encode())

    def starts(self) -> list[dict[str, Any]]:
        """The job's starts, oldest first; a damaged one is left out."""
        names = self.vouched_names("starts")
        found = []
        for data in self.get_many([f"starts/{n}" for n in names]).values():
            try:
                record = json.loads(data) if data is not None else None
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("phases"), list):
                found.append(record)
        return sorted(found, key=lambda r: r.get("started_at") if isinstance(r.get("started_at"), (int, float)) else 0)

    def vouched_objects(self) -> list[str]:
        """Every object of the job folder that has a marker (one recursive listing)."""
        self.fs.invalidate_cache(self.root)
        try:
            paths = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        prefix = self.root.rstrip("/") + "/"
        rels = {p[len(prefix):] for p in paths if p.startswith(prefix)}
        return sorted(r for r in rels if not r.endswith(MARKER) and r + MARKER in rels)


def encode_png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")  # no timestamps: same pixels, same bytes
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def job_folders(output: RenderStore, name: str) -> list[str]:
    """Folders ``<name>-<12 hex>`` under an output URI that hold a manifest (earlier runs of a job name)."""
    try:
        entries = output.fs.ls(output.root, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        base = posixpath.basename(entry.rstrip("/"))
        prefix, _, ident = base.rpartition("-")
        if prefix == name and len(ident) == 12 and all(c in "0123456789abcdef" for c in ident):
            if output.child(base).exists("manifest.json" + MARKER):
                found.append(base)
    return sorted(found)


def replace_local_file(path: str, fill: Callable[[BinaryIO], Any]) -> None:
    """Write a local file through a temporary file beside it, then rename it over ``path``
    (atomic on one filesystem): a write that fails, a full disk or a killed process, leaves the
    old file whole. The temporary file is removed on failure; one left by a killed process has no
    marker, so no reader trusts it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex[:8]}{TEMPORARY}"
    try:
        with open(temporary, "wb") as handle:
            fill(handle)
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(exc, OSError) and exc.errno is not None:  # name the object, not its temporary file
            raise OSError(exc.errno, exc.strerror, path) from None
        raise
