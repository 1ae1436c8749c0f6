"""Models in the Hugging Face cache: fetched once per node before a render, read offline after.

``deforum-ray fetch-model`` downloads what :func:`~.loading.load_weights` reads (the diffusers
folders, never a repository's multi-GB single-file checkpoints) into the node's HF cache
(``HF_HOME``), so a pool of actors never races to download the same weights. A worker then loads a
cached model from its snapshot folder with ``local_files_only``: a render of a fetched model makes
no network request at all, and works with the Hub unreachable.

A snapshot counts as cached only when it is complete: ``huggingface_hub`` keeps the repository's
file listing beside the snapshot and checks every file against it (an interrupted fetch is resumed
by the next one, never loaded half).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import first_line
from .loading import RANDOM_PREFIX, ModelError

# What load_weights reads from a diffusers-layout repository, and nothing else.
MODEL_FILES = ["model_index.json", "scheduler/*", "transformer/*", "vae/*", "text_encoder/*",
               "text_encoder_2/*", "tokenizer/*", "tokenizer_2/*"]
# What model.depth.DepthModel reads from a transformers depth estimator's repository (motion.depth).
DEPTH_FILES = ["config.json", "preprocessor_config.json", "*.safetensors"]


class ModelAccessError(ModelError):
    """The model named cannot be had: gated, private, no such repository, or not a model folder or
    repo id at all (the user's to fix: exit 2)."""


@dataclass(frozen=True)
class FetchResult:
    source: str  # what was asked for
    path: str  # the local folder a worker loads
    state: str  # downloaded | cached | a local folder | built in-process
    size_bytes: int
    seconds: float

    def line(self) -> str:
        size = f"{self.size_bytes / 2**20:.1f} MiB"
        if self.state == "downloaded":
            return f"model {self.source}: downloaded {size} in {self.seconds:.1f} s into {self.path}"
        if self.state == "cached":
            return f"model {self.source}: already cached ({size}): {self.path}"
        return f"model {self.source}: {self.state}, nothing to fetch"


def cached_snapshot(repo: str, files: list[str] = MODEL_FILES) -> str | None:
    """The complete cached snapshot folder of ``repo``, or None (no network request either way)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo, allow_patterns=files, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):  # not there, incomplete, or a malformed id
        return None


def fetch_model(source: str, *, progress: bool = True, depth: bool = False) -> FetchResult:
    """Make ``source`` loadable without the network: download a Hub repository's model files into
    the HF cache (a complete cached copy is only checked), accept a folder as it is. ``depth``: a
    depth estimator's files (``motion.depth``) instead of a diffusers FLUX model's. Raises
    :class:`ModelAccessError` (gated, private, unknown) or :class:`ModelError` with one line."""
    start = time.monotonic()
    if source == "tiny" or source.startswith(RANDOM_PREFIX):
        return FetchResult(source, source, "built in-process", 0, 0.0)
    field, files, marker = ("motion.depth", DEPTH_FILES, "config.json") if depth else \
        ("model", MODEL_FILES, "model_index.json")
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / marker).is_file():
            kind = "transformers" if depth else "diffusers"
            raise ModelAccessError(f"{field}: folder {str(folder)!r} has no {marker}: not a {kind} model folder")
        return FetchResult(source, str(folder), "a local folder", 0, 0.0)
    repo = source
    if repo.count("/") != 1 or repo.startswith(("/", ".", "~")):
        raise ModelAccessError(f"{field}: {source!r} is neither a folder here nor a Hugging Face repo id (owner/name)")
    cached = cached_snapshot(repo, files)
    if cached is not None:
        return FetchResult(source, cached, "cached", _size(cached), time.monotonic() - start)
    path = _download(repo, progress, files, field)
    return FetchResult(source, path, "downloaded", _size(path), time.monotonic() - start)


def _download(repo: str, progress: bool, files: list[str] = MODEL_FILES, field: str = "model") -> str:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    token = os.environ.get("HF_TOKEN") or None
    page = f"{constants.ENDPOINT}/{repo}"
    quiet = not progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        return snapshot_download(repo, allow_patterns=files, token=token)
    except GatedRepoError:
        if token is None:
            raise ModelAccessError(f"{field}: {repo} is gated: accept its licence at {page} and set HF_TOKEN") from None
        raise ModelAccessError(f"{field}: {repo} is gated and HF_TOKEN has no access to it: accept its licence "
                               f"at {page} with that account") from None
    except RepositoryNotFoundError:
        hint = "" if token else " (a private one needs HF_TOKEN)"
        raise ModelAccessError(f"{field}: no Hugging Face repo {repo!r}{hint}") from None
    except LocalEntryNotFoundError as exc:  # huggingface_hub's word for "the Hub did not answer"
        cause = exc.__cause__ or exc
        raise ModelError(f"{field}: cannot reach the Hugging Face Hub at {constants.ENDPOINT} to fetch {repo}: "
                         f"{first_line(cause)}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"{field}: fetching {repo} failed: {first_line(exc)}") from None
    finally:
        if quiet:
            enable_progress_bars()


def _size(folder: str) -> int:
    # The snapshot holds links into the cache's blobs: count what they point at.
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
