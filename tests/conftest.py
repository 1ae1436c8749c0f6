from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_job(tmp_path: Path):
    """Write a job mapping as YAML under tmp_path and return its path."""

    def write(job: dict, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return path

    return write


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """An output folder that already holds a finished render, to prove bad input leaves it alone."""
    out = tmp_path / "renders"
    (out / "earlier-000000000000").mkdir(parents=True)
    (out / "earlier-000000000000" / "earlier.mp4").write_bytes(b"an earlier render")
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under a folder with its size, mtime and content."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            stat = path.stat()
            data = path.read_bytes() if path.is_file() else b""
            out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, data)
    return out
