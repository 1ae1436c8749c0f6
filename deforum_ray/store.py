"""One job's output folder on any fsspec filesystem (local path, s3://, memory://).

Layout (DESIGN.md section 4)::

    <output.uri>/<job_name>-<job_id>/
      spec.yaml  manifest.json
      segments/<clip>/<seg>/frames/<frame:06d>.png
      <job_name>.mp4
"""

from __future__ import annotations

import io
import json
import posixpath
from typing import Any

import fsspec
import numpy as np


class RenderStore:
    """Reads and writes the objects of one job folder; every object is written whole."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        self.local = "file" in _protocols(self.fs)

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def url(self, rel: str = "") -> str:
        """What to show a user: a plain path for local files, else the full URI."""
        path = self.path(rel) if rel else self.root
        return path if self.local else self.fs.unstrip_protocol(path)

    # -- objects ------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        if self.local:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as handle:
            handle.write(data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as handle:
            return handle.read()

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, value: Any) -> None:
        self.write_text(rel, json.dumps(value, indent=2, sort_keys=True) + "\n")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def put_file(self, local_path: str, rel: str) -> None:
        path = self.path(rel)
        if self.local:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.put_file(local_path, path)

    # -- frames -------------------------------------------------------------------------------
    @staticmethod
    def frame_rel(clip: str, segment: int, frame: int) -> str:
        return f"segments/{clip}/{segment}/frames/{frame:06d}.png"

    def write_frame(self, clip: str, segment: int, frame: int, rgb: np.ndarray) -> None:
        self.write_bytes(self.frame_rel(clip, segment, frame), encode_png(rgb))

    def read_frame(self, clip: str, segment: int, frame: int) -> np.ndarray:
        return decode_png(self.read_bytes(self.frame_rel(clip, segment, frame)))


def encode_png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")  # no timestamps: same pixels, same bytes
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
