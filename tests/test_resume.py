"""Killed renders resume bit-exactly; corrupt objects are re-rendered; changed specs are refused."""

from __future__ import annotations

import hashlib
import re
import signal
from pathlib import Path

import pytest
import yaml

from conftest import cli, snapshot, start_cli, stop_when
from deforum_ray.store import RenderStore

EVERY = 5


def write_job(folder: Path, frames: int = 150, **top) -> Path:
    job = {
        "name": "resume", "model": "tiny", "width": 64, "height": 64, "seed": 11,
        "noise_mode": "slerp", "color_coherence": "match_frame",
        "motion": {"zoom": "0:(1.01)", "angle": "0:(0.5)"},
        "clips": [{"name": "long", "num_frames": frames, "prompts": {0: "a red fox", min(40, frames - 1): "a snowy hill"}},
                  {"name": "short", "num_frames": 12, "prompts": {0: "a quiet harbour"}}],
        "cluster": {"checkpoint_every": EVERY},
    }
    job.update(top)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def frame_hashes(job_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(job_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(job_dir.glob("segments/*/*/frames/*.png"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, str]:
    """The frames of an uninterrupted render."""
    folder = tmp_path_factory.mktemp("reference")
    result = cli("render", str(write_job(folder)), f"output.uri={folder / 'out'}", "--no-progress")
    assert result.returncode == 0, result.stderr
    job_dir = Path(result.stdout.strip().splitlines()[-1]).parent
    hashes = frame_hashes(job_dir)
    assert len(hashes) == 162
    return hashes


def render_here(capsys, *args: str) -> tuple[int, str, str]:
    """``deforum-ray render`` in this process, on the session's Ray with one worker: the same CLI
    path without paying for a Ray start (the kill tests need a process of their own)."""
    from deforum_ray.cli import main

    capsys.readouterr()
    code = main(["render", *args, "cluster.num_workers=1", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only_job_dir(out: Path) -> Path:
    (job_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return job_dir


def frames_written(out: Path) -> int:
    return sum(1 for _ in out.glob("*/segments/long/0/frames/*.png.ok"))


def test_workers_of_a_killed_driver_stop_instead_of_finishing_their_chain(tmp_path):
    """The OOM killer takes only the render's own process: its Ray workers must stop within
    moments (Ray takes a driver's actors down with it; here about 2 s, some 50 frames), not render
    the rest of a long chain that nobody will collect."""
    import time

    import psutil

    out = tmp_path / "out"
    process = start_cli("render", str(write_job(tmp_path, frames=3000)), f"output.uri={out}", "--no-progress")
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


def test_ctrl_c_then_sigkill_mid_clip_resume_bit_identically(tmp_path, reference):
    """A render stopped twice, cleanly (Ctrl-C) and then outright (SIGKILL), ends with the frames
    of an uninterrupted one; each run picks up from the last good checkpoint."""
    out = tmp_path / "out"
    job = write_job(tmp_path)
    process = start_cli("render", str(job), f"output.uri={out}", "--no-progress")
    stop_when(process, lambda: frames_written(out) >= 23, sig=signal.SIGINT)
    assert process.returncode == 130
    assert "run the same command again to resume" in process.stderr.read()
    interrupted_at = frames_written(out)

    process = start_cli("render", str(job), f"output.uri={out}", "--no-progress")
    stop_when(process, lambda: frames_written(out) >= max(37, interrupted_at + 2 * EVERY))  # mid-clip
    assert process.returncode == -signal.SIGKILL
    killed_at = frames_written(out)  # stop_when returned: nothing of that render runs any more
    assert killed_at < 150

    status = cli("status", str(out))
    assert status.returncode == 0 and "incomplete" in status.stdout

    again = cli("render", str(job), f"output.uri={out}", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr
    job_dir = only_job_dir(out)
    assert frame_hashes(job_dir) == reference

    rows = RenderStore(str(job_dir)).read_runlog()
    runs = sorted({r["worker"] for r in rows}, key=lambda w: min(r["timestamp"] for r in rows if r["worker"] == w))
    assert len(runs) == 3  # interrupted, killed, finished
    resumed_from = min(r["frame"] for r in rows if r["worker"] == runs[2] and r["clip"] == "long")
    assert resumed_from % EVERY == 0 and 0 < resumed_from <= killed_at
    before = [r for r in rows if r["clip"] == "long" and r["frame"] < resumed_from]
    assert sorted(r["frame"] for r in before) == list(range(resumed_from))  # each exactly once, over all runs
    assert all(r["worker"] in runs[:2] for r in before)
    assert killed_at - resumed_from < 2 * EVERY  # at most the frames since the last checkpoint are redone
    assert "complete" in cli("status", str(out)).stdout


def rendered(tmp_path: Path, capsys, frames: int = 150, **top) -> tuple[Path, Path, Path]:
    """(job spec, output, job folder) of a finished render of ``write_job``."""
    out = tmp_path / "out"
    job = write_job(tmp_path, frames=frames, **top)
    assert render_here(capsys, str(job), f"output.uri={out}")[0] == 0
    return job, out, only_job_dir(out)


def flip_a_byte(path: Path) -> None:
    """Corrupt a file and keep its size: only reading its bytes can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def test_corrupt_checkpoint_and_truncated_frame_are_rerendered(tmp_path, ray_cluster, capsys):
    job, out, job_dir = rendered(tmp_path, capsys)
    reference = frame_hashes(job_dir)
    frame = job_dir / "segments/long/0/frames/000013.png"
    frame.write_bytes(frame.read_bytes()[:100])  # truncated
    flip_a_byte(job_dir / "segments/long/0/ckpt/000010.safetensors")
    (job_dir / "resume.mp4").unlink()

    code, _, err = render_here(capsys, str(job), f"output.uri={out}")
    assert code == 0, err
    assert frame_hashes(job_dir) == reference
    store = RenderStore(str(job_dir))
    problems = {e["object"] for e in store.events()}
    assert {"segments/long/0/frames/000013.png", "segments/long/0/ckpt/000010.safetensors"} <= problems
    rows = store.read_runlog()
    latest_run = max(rows, key=lambda r: r["timestamp"])["worker"]
    redone = sorted(r["frame"] for r in rows if r["worker"] == latest_run)
    assert redone[0] == 5 and redone == list(range(5, 150))  # from checkpoint 5, the newest good one
    assert (job_dir / "resume.mp4").is_file()
    status = cli("status", str(job_dir)).stdout
    assert "problem: corrupt segments/long/0" in status


def test_a_finished_job_is_known_from_listings_and_the_final_stage_catches_bit_rot(tmp_path, tiny_pool):
    from deforum_ray.render.driver import render
    from deforum_ray.post.finalize import FinalizeError
    from deforum_ray.job.spec import load_job

    def spec(*overrides: str):
        return load_job(str(write_job(tmp_path, frames=30)), [f"output.uri={tmp_path / 'out'}", *overrides])

    first = render(spec(), pool=tiny_pool, progress=False)
    job_dir = Path(first.output_dir)
    good, video = frame_hashes(job_dir), Path(first.video).read_bytes()
    flip_a_byte(job_dir / "segments/long/0/frames/000020.png")  # bit rot

    again = render(spec(), pool=tiny_pool, progress=False)  # DONE sizes and listings vouch: nothing downloaded
    assert (again.frames, again.resumed, again.final.encoded) == (0, 42, False)

    with pytest.raises(FinalizeError, match=r"^clip 'long': frame 20 is missing or corrupt"):
        render(spec("post.interpolation=2"), pool=tiny_pool, progress=False)  # encoding reads every frame
    assert Path(first.video).read_bytes() == video  # the last good video stays

    fixed = render(spec("post.interpolation=2"), pool=tiny_pool, progress=False)
    assert frame_hashes(job_dir) == good
    assert [(r.frames_rendered, r.resumed_from) for r in fixed.reports if r.label.startswith("long")] == [(10, 20)]
    assert fixed.final.encoded


def test_the_driver_sees_where_chains_stand_from_listings(tmp_path):
    import torch

    from deforum_ray.job.plan import Segment
    from deforum_ray.job.plan import ChainTask
    from deforum_ray.render.resume import chain_standing, write_done

    store = RenderStore(str(tmp_path))
    seg = Segment("c", 0, 0, 12)
    task = ChainTask("c", 0, 12, (seg,))
    assert chain_standing(store, task) == (False, 0)
    for n in range(12):
        store.put_tensors(store.latent_rel("c", 0, n), {"latent": torch.full((1, 16, 2, 2), float(n))})
        store.put(store.frame_rel("c", 0, n), bytes([n]) * (100 + n))
    for frame in (5, 10):
        store.put_checkpoint("c", 0, frame, {"frame": torch.tensor(frame)})
    assert chain_standing(store, task) == (False, 10)  # every frame there, but no DONE: the worker decides
    write_done(store, "c", seg, {})
    assert chain_standing(store, task) == (True, 12)
    assert chain_standing(store, task, fresh=True) == (False, 0)

    frame = Path(store.path(store.frame_rel("c", 0, 7)))
    frame.write_bytes(frame.read_bytes()[:50])  # truncated: no longer the size DONE recorded
    assert chain_standing(store, task) == (False, 10)  # the worker's byte check then finds frame 7
    Path(store.path(store.latent_rel("c", 0, 7)) + ".ok").unlink()
    assert chain_standing(store, task) == (False, 5)  # from the newest checkpoint before the gap


def test_changed_spec_into_the_same_folder_is_refused_then_fresh_renders(tmp_path, ray_cluster, capsys):
    job, out, _ = rendered(tmp_path, capsys, frames=6)
    before = snapshot(out)
    code, _, err = render_here(capsys, str(job), f"output.uri={out}", "clips.0.prompts.0=a blue fox")
    assert code == 2
    assert "output.uri: job 'resume' was already rendered here from a different spec" in err
    assert "clips[0].prompts.0" in err and "--fresh" in err
    assert "Traceback" not in err
    assert snapshot(out) == before  # nothing touched
    code, _, err = render_here(capsys, str(job), f"output.uri={out}", "clips.0.prompts.0=a blue fox", "--fresh")
    assert code == 0, err
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 2 and all(p.startswith("resume-") for p in folders)
    assert all(snapshot(out)[k] == v for k, v in before.items())  # the earlier render is kept


def test_non_pixel_changes_reuse_the_render(tmp_path, ray_cluster, capsys):
    job, out, _ = rendered(tmp_path, capsys, frames=6)
    code, _, err = render_here(capsys, str(job), f"output.uri={out}", "fps=24", "post.loop=true")
    assert code == 0, err
    assert "rendered 0 frames (18 already done)" in err


# --- a clip cut into keyframe-anchored segments ---------------------------------------------------

SEGMENTED = {"segment_length": 12}


@pytest.fixture(scope="module")
def segmented_reference(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("segmented-reference")
    result = cli("render", str(write_job(folder, frames=60, **SEGMENTED)), f"output.uri={folder / 'out'}", "--no-progress")
    assert result.returncode == 0, result.stderr
    hashes = frame_hashes(Path(result.stdout.strip().splitlines()[-1]).parent)
    assert len(hashes) == 72 and sum(1 for h in hashes if h.startswith("segments/long/4/")) == 12
    return hashes


def long_frames_written(out: Path) -> int:
    return sum(1 for _ in out.glob("*/segments/long/*/frames/*.png.ok"))


def test_a_segmented_render_killed_midway_resumes_bit_identically(tmp_path, segmented_reference):
    out = tmp_path / "out"
    job = write_job(tmp_path, frames=60, **SEGMENTED)
    process = start_cli("render", str(job), f"output.uri={out}", "--no-progress")
    stop_when(process, lambda: long_frames_written(out) >= 30)  # anchors done, mid-way through segment 2
    assert process.returncode == -signal.SIGKILL
    killed_at = long_frames_written(out)
    assert killed_at < 60

    again = cli("render", str(job), f"output.uri={out}", "--no-progress")
    assert again.returncode == 0, again.stderr
    job_dir = only_job_dir(out)
    assert frame_hashes(job_dir) == segmented_reference
    rows = RenderStore(str(job_dir)).read_runlog()
    second = max(rows, key=lambda r: r["timestamp"])["worker"]
    assert not [r for r in rows if r["worker"] == second and r["segment"] == -1]  # anchors were all kept
    redone = [r for r in rows if r["worker"] == second and r["clip"] == "long"]
    assert len(redone) <= 60 - killed_at + EVERY  # finished segments kept; at most a checkpoint's worth again
    status = cli("status", str(out)).stdout
    assert "complete" in status
    assert re.search(r"^long\s+60/60\s+5/5\s+5/5\s", status, re.M), status  # frames, anchors, segments


def test_a_corrupt_anchor_is_rendered_again_and_its_segments_follow(tmp_path, ray_cluster, capsys):
    job, out, job_dir = rendered(tmp_path, capsys, frames=60, **SEGMENTED)
    segmented_reference = frame_hashes(job_dir)
    anchor = job_dir / "anchors/long/000024.safetensors"
    data = bytearray(anchor.read_bytes())
    data[len(data) // 2] ^= 0x55
    anchor.write_bytes(bytes(data))
    for seg in (2, 3):  # the segments that need anchor 24 (as its start or as the one it eases toward)
        for marker in (job_dir / f"segments/long/{seg}").rglob("*.ok"):
            marker.unlink()

    code, _, err = render_here(capsys, str(job), f"output.uri={out}")
    assert code == 0, err
    assert frame_hashes(job_dir) == segmented_reference
    store = RenderStore(str(job_dir))
    assert "anchors/long/000024.safetensors" in {e["object"] for e in store.events()}
    rows = store.read_runlog()
    latest = max(rows, key=lambda r: r["timestamp"])["worker"]
    assert sorted(r["frame"] for r in rows if r["worker"] == latest and r["segment"] == -1) == [24, 36, 48]
    assert sorted(r["frame"] for r in rows if r["worker"] == latest and r["segment"] >= 0) == list(range(24, 48))
