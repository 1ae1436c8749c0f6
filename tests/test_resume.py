"""Damaged stores are repaired, finished work is recognised, and changed specs are refused.

These run the CLI in this process on the session's Ray (no Ray start to pay for each render);
the crash tests, which need a process to kill, are in test_crash.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SEGMENTED, frame_hashes, only_job_dir, render_here, resume_job, snapshot, status_here
from deforum_ray.store import RenderStore


def rendered(tmp_path: Path, capsys, frames: int = 150, **top) -> tuple[Path, Path, Path]:
    """(job spec, output, job folder) of a finished render of ``resume_job``."""
    out = tmp_path / "out"
    job = resume_job(tmp_path, frames=frames, **top)
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
    status = status_here(capsys, str(job_dir))[1]
    assert "problem: corrupt segments/long/0" in status


def test_a_finished_job_is_known_from_listings_and_the_final_stage_catches_bit_rot(tmp_path, tiny_pool):
    from deforum_ray.render.driver import render
    from deforum_ray.post.finalize import FinalizeError
    from deforum_ray.job.spec import load_job

    def spec(*overrides: str):
        return load_job(str(resume_job(tmp_path, frames=30)), [f"output.uri={tmp_path / 'out'}", *overrides])

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
