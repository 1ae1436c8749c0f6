"""Compiled code that travels: ``cluster.compile_cache`` as a store URI (a folder or ``s3://...``).

Inductor keeps what it compiles in a cache folder on the machine (``/tmp/torchinductor_<user>``,
or ``cluster.compile_cache`` when that is a local folder): a second start on the same machine is
warm, a new node or tomorrow's fresh pod is cold. After a worker's first render call,
:class:`CompileArtifacts` saves torch's portable cache artifacts
(``torch.compiler.save_cache_artifacts``: FX graphs, AOTAutograd entries, Triton kernels) as one
object under ``compile-artifacts/`` of the ``compile_cache`` store, and a worker whose Inductor
folder is cold loads it (``load_cache_artifacts``) before its first call, so Inductor finds every
graph compiled. A local folder keeps both: Inductor's files for this machine, the artifacts for
one that copies the folder.

An object is keyed by what makes it valid (:func:`artifact_facts`: torch, Triton and CUDA
versions, the GPU, the transformer's architecture and precision, the compile scope and mode, the
batch and the frame size) and carries those facts in its header. The store's markers catch a
corrupt or half-written object; a header from another machine or version is foreign; torch
refusing the bytes makes them unreadable. Each is ignored with one line (the job's events and
the worker's log) and compiling starts anew: Inductor checks every entry against its own keys,
so loaded artifacts can make a start faster, never a frame different.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from ..errors import first_line
from ..store import RenderStore

FORMAT = 1
MAX_HEADER = 64 * 1024  # bytes of facts before the artifacts; a larger header is not ours
FOLDER = "compile-artifacts"


def artifact_facts(transformer: Any, precision: str, scope: str, mode: str, batch: int, size: tuple[int, int],
                   device: Any) -> dict[str, Any]:
    """What compiled code depends on, as plain data (the key is its hash)."""
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    config = getattr(transformer, "config", {}) or {}
    architecture = json.dumps({k: v for k, v in dict(config).items() if not str(k).startswith("_")},
                              sort_keys=True, default=str)
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"format": FORMAT, "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda,
            "device": gpu, "model": hashlib.sha256(architecture.encode()).hexdigest()[:16], "precision": precision,
            "scope": scope, "mode": mode, "batch": int(batch), "size": [int(size[0]), int(size[1])]}


def pack(facts: dict[str, Any], artifacts: bytes) -> bytes:
    header = json.dumps(facts, sort_keys=True).encode()
    return struct.pack(">I", len(header)) + header + artifacts


def unpack(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """Header facts and artifacts, or None when the bytes are not an object this module wrote."""
    if len(data) < 4:
        return None
    (length,) = struct.unpack(">I", data[:4])
    if length > MAX_HEADER or len(data) < 4 + length:
        return None
    try:
        facts = json.loads(data[4: 4 + length])
    except ValueError:
        return None
    return (facts, data[4 + length:]) if isinstance(facts, dict) else None


class CompileArtifacts:
    """One worker's compiled code for one key, in the ``compile_cache`` store."""

    def __init__(self, uri: str, facts: dict[str, Any], storage_options: dict[str, Any] | None = None):
        self.facts = facts
        self.key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]
        self.store = RenderStore(uri, storage_options or {})
        self.rel = f"{FOLDER}/{self.key}.bin"
        self.loaded = False  # this worker's compiled code came from the store
        self.saved = False

    def where(self) -> str:
        return self.store.url(self.rel)

    def load(self) -> str | None:
        """Load the artifacts into torch's caches. Returns None when they were loaded or there are
        none yet (a cold start), else the one line saying why they were ignored."""
        import torch

        try:
            before = len(self.store.noticed)
            data = self.store.get(self.rel)
        except Exception as exc:
            return f"compile cache {self.where()}: cannot be read ({first_line(exc)}); compiling anew"
        if data is None:
            if len(self.store.noticed) > before:  # a marker that does not vouch for the bytes
                return f"compile cache {self.where()}: corrupt ({self.store.noticed[-1]['message']}); compiling anew"
            return None
        unpacked = unpack(data)
        if unpacked is None:
            return f"compile cache {self.where()}: not compile artifacts of deforum-ray; compiling anew"
        facts, artifacts = unpacked
        if facts != self.facts:
            differ = sorted(k for k in set(facts) | set(self.facts) if facts.get(k) != self.facts.get(k))
            return (f"compile cache {self.where()}: foreign (made with other {', '.join(differ[:4])}); "
                    "compiling anew")
        try:
            info = torch.compiler.load_cache_artifacts(artifacts)
        except Exception as exc:
            return f"compile cache {self.where()}: unreadable ({first_line(exc)}); compiling anew"
        if info is None:
            return f"compile cache {self.where()}: unreadable (torch did not accept it); compiling anew"
        self.loaded = True
        return None

    def save(self) -> bool:
        """Save what this process compiled so far (once); False when there is nothing to save."""
        import torch

        if self.saved or self.loaded:
            return False
        result = torch.compiler.save_cache_artifacts()
        if result is None:
            return False
        self.store.put(self.rel, pack(self.facts, result[0]))  # whole, then its marker: never half an object
        self.saved = True
        return True

