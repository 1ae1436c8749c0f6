"""Renders that crash (SIGKILL), are interrupted (Ctrl-C) or lose their driver resume bit-exactly.

Each killed render is a real ``deforum-ray`` process with its own embedded Ray, stopped the way
a node failure or the OOM killer would stop it."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from conftest import (EVERY, SEGMENTED, frame_hashes, only_job_dir, render_here, resume_job, start_cli,
                      status_here, stop_when)
from deforum_ray.job.frames import Cadence
from deforum_ray.store import RenderStore


# The Ctrl-C/SIGKILL job diffuses every third frame and checkpoints every third: each checkpoint
# falls between two keys (its state holds both, and the depth each was seen at), the hardest place to
# resume from. Its camera moves in 3d over the depth a (tiny) depth model sees in each key.
CADENCED_EVERY = 3


@pytest.fixture(scope="module")
def cadenced(depth_folder) -> dict:
    return {"cadence": 3, "cluster": {"checkpoint_every": CADENCED_EVERY, "cpu_threads": 1},
            "motion": {"mode": "3d", "translation_x": "0:(2)", "translation_z": "0:(3)", "rotation_3d_y": "0:(0.6)",
                       "rotation_3d_z": "0:(0.5)", "depth": str(depth_folder)}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_cluster, cadenced) -> dict[str, str]:
    """The frames of an uninterrupted render (in this process: the same bytes, see ``resume_job``)."""
    folder = tmp_path_factory.mktemp("reference")
    assert render_here(None, str(resume_job(folder, **cadenced)), f"output.uri={folder / 'out'}")[0] == 0
    hashes = frame_hashes(only_job_dir(folder / "out"))
    assert len(hashes) == 162
    return hashes


def frames_written(out: Path) -> int:
    return sum(1 for _ in out.glob("*/segments/long/0/frames/*.png.ok"))


def test_workers_of_a_killed_driver_stop_instead_of_finishing_their_chain(tmp_path):
    """The OOM killer takes only the render's own process: its Ray workers must stop within
    moments (Ray takes a driver's actors down with it; here about 2 s, some 50 frames), not render
    the rest of a long chain that nobody will collect."""
    import time

    import psutil

    out = tmp_path / "out"
    process = start_cli("render", str(resume_job(tmp_path, frames=3000)), f"output.uri={out}", "--no-progress")
    tree: list = []
    try:
        deadline = time.monotonic() + 120
        while frames_written(out) < 10:
            assert process.poll() is None and time.monotonic() < deadline, "never started rendering"
            time.sleep(0.01)
        tree = psutil.Process(process.pid).children(recursive=True)
        process.kill()  # the driver alone; its embedded Ray and its workers are left running
        process.wait(timeout=30)
        counts = [frames_written(out)]
        while time.monotonic() < deadline:
            time.sleep(1.0)
            counts.append(frames_written(out))
            if len(counts) >= 4 and counts[-1] == counts[-4]:
                break
        # about 90 frames a second: finishing the chain would write all 3000 in about half a minute
        assert counts[-1] == counts[-4] and counts[-1] < 1000, counts
    finally:
        for child in tree:
            if child.is_running():
                child.kill()
        psutil.wait_procs(tree, timeout=30)


def test_ctrl_c_then_sigkill_mid_clip_resume_bit_identically(tmp_path, reference, capsys, cadenced):
    """A 3d render with a depth model at cadence 3 stopped twice, cleanly (Ctrl-C) and then
    outright (SIGKILL), ends with the frames of an uninterrupted one; each run picks up from the
    last good checkpoint, which lies between two diffused frames."""
    out = tmp_path / "out"
    job = resume_job(tmp_path, **cadenced)
    every = CADENCED_EVERY
    process = start_cli("render", str(job), f"output.uri={out}", "--no-progress")
    stop_when(process, lambda: frames_written(out) >= 23, sig=signal.SIGINT)
    assert process.returncode == 130
    assert "run the same command again to resume" in process.stderr.read()
    interrupted_at = frames_written(out)

    process = start_cli("render", str(job), f"output.uri={out}", "--no-progress")
    stop_when(process, lambda: frames_written(out) >= max(37, interrupted_at + 2 * every))  # mid-clip
    assert process.returncode == -signal.SIGKILL
    killed_at = frames_written(out)  # stop_when returned: nothing of that render runs any more
    assert killed_at < 150

    code, status = status_here(capsys, str(out))
    assert code == 0 and "incomplete" in status

    code, _, err = render_here(capsys, str(job), f"output.uri={out}")  # the last run: on the session's Ray
    assert code == 0, err
    assert "already done" in err
    job_dir = only_job_dir(out)
    assert frame_hashes(job_dir) == reference

    rows = RenderStore(str(job_dir)).read_runlog()
    runs = sorted({r["worker"] for r in rows}, key=lambda w: min(r["timestamp"] for r in rows if r["worker"] == w))
    assert len(runs) == 3  # interrupted, killed, finished
    resumed_from = min(r["frame"] for r in rows if r["worker"] == runs[2] and r["clip"] == "long")
    assert resumed_from % every == 0 and 0 < resumed_from <= killed_at
    checkpoint = RenderStore(str(job_dir)).get_checkpoint("long", 0, resumed_from)
    assert checkpoint is not None and {"next_key", "depth", "next_key_depth"} <= set(checkpoint)  # between two keys
    before = [r for r in rows if r["clip"] == "long" and r["frame"] < resumed_from]
    assert sorted(r["frame"] for r in before) == list(range(resumed_from))  # each exactly once, over all runs
    assert all(r["worker"] in runs[:2] for r in before)
    assert killed_at - resumed_from < 2 * every  # at most the frames since the last checkpoint are redone
    assert [r["frame"] for r in sorted(rows, key=lambda r: r["frame"]) if r["clip"] == "long" and r["diffused"]] \
        == Cadence(0, 150, 3).keys()
    assert "complete" in status_here(capsys, str(out))[1]


# --- a clip cut into keyframe-anchored segments ---------------------------------------------------

@pytest.fixture(scope="module")
def segmented_reference(tmp_path_factory, ray_cluster) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("segmented-reference")
    assert render_here(None, str(resume_job(folder, frames=60, **SEGMENTED)), f"output.uri={folder / 'out'}")[0] == 0
    hashes = frame_hashes(only_job_dir(folder / "out"))
    assert len(hashes) == 72 and sum(1 for h in hashes if h.startswith("segments/long/4/")) == 12
    return hashes


def long_frames_written(out: Path) -> int:
    return sum(1 for _ in out.glob("*/segments/long/*/frames/*.png.ok"))


def test_a_segmented_render_stopped_midway_by_sigterm_resumes_bit_identically(tmp_path, segmented_reference, capsys):
    """SIGTERM (a scheduler stopping the job) is handled as Ctrl-C is: one line, exit 143, finished
    work kept; the same command ends with the frames of an uninterrupted render."""
    out = tmp_path / "out"
    job = resume_job(tmp_path, frames=60, **SEGMENTED)
    process = start_cli("render", str(job), f"output.uri={out}", "--no-progress")
    stop_when(process, lambda: long_frames_written(out) >= 30, sig=signal.SIGTERM)  # mid-way through segment 2
    err = process.stderr.read()
    assert process.returncode == 143, err[-2000:]
    assert "deforum-ray: stopped (SIGTERM); finished work is kept: the same command resumes" in err
    assert "Traceback" not in err and "SIGTERM received" not in err  # not Ray's stack dump
    killed_at = long_frames_written(out)
    assert killed_at < 60

    code, _, err = render_here(capsys, str(job), f"output.uri={out}")  # resumed on the session's Ray
    assert code == 0, err
    job_dir = only_job_dir(out)
    assert frame_hashes(job_dir) == segmented_reference
    rows = RenderStore(str(job_dir)).read_runlog()
    second = max(rows, key=lambda r: r["timestamp"])["worker"]
    assert not [r for r in rows if r["worker"] == second and r["segment"] == -1]  # anchors were all kept
    redone = [r for r in rows if r["worker"] == second and r["clip"] == "long"]
    assert len(redone) <= 60 - killed_at + EVERY  # finished segments kept; at most a checkpoint's worth again
    status = status_here(capsys, str(out))[1]
    assert "complete" in status
    assert re.search(r"^long\s+60/60\s+5/5\s+5/5\s", status, re.M), status  # frames, anchors, segments
