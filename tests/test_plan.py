"""RenderPlan: segments, transformer passes, job_id, and the plan a user reads."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deforum_ray.job.plan import cut_segments, format_plan, frame_passes, job_id, plan
from deforum_ray.job.frames import start_indices
from deforum_ray.job.spec import load_job

# The demo job as it was before its harbour clip took an init image: these tests count its passes
# and pin its id, which must not move when jobs/demo.yaml does.
DEMO = """
name: demo
model: tiny
seed: 42
width: 128
height: 128
fps: 12
strength: 0.5
motion: {zoom: "0:(1.0), 24:(1.04)", angle: "0:(0), 24:(2)"}
clips:
  - {name: lighthouse, num_frames: 24,
     prompts: {0: "a lighthouse at dusk, oil painting", 12: "a lighthouse in a storm, oil painting"}}
  - {name: harbour, num_frames: 24, seed: 7, prompts: {0: "a quiet harbour at night, oil painting"},
     motion: {zoom: "0:(1.02)", translation_x: "0:(0), 12:(2)"}}
post: {interpolation: 1, loop: false}
"""


def demo(tmp_path, *overrides: str):
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO)
    return load_job(path, [f"output.uri={tmp_path}", *overrides])


@pytest.mark.parametrize(
    ("strength", "steps", "k"),
    [(0.5, 4, 2), (1.0, 4, 0), (0.25, 4, 3), (0.3, 5, 4), (0.7, 5, 2), (0.125, 4, 4), (0.126, 4, 3), (0.9, 28, 3)],
)
def test_start_index_rounds_half_up(strength, steps, k):
    # 5 * (1 - 0.3) = 3.5 exactly on paper (3.4999999999999996 in floats) rounds up to 4
    assert int(start_indices(np.array([strength]), steps)[0]) == k


def test_passes_per_frame(tmp_path):
    clip = demo(tmp_path).clips[0]  # 24 frames, strength 0.5, 4 steps, no init image
    passes = frame_passes(clip)
    assert passes[0] == 4 and passes[1:] == [2] * 23
    ramp = demo(tmp_path, "clips.0.strength=0:(1.0), 23:(0.5)").clips[0]
    assert frame_passes(ramp)[-1] == 2 and frame_passes(ramp)[1] == 4


def test_init_image_frame_runs_only_its_strength(tmp_path):
    image = tmp_path / "init.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    clip = demo(tmp_path, f"clips.0.init_image={image}").clips[0]
    assert frame_passes(clip) == [2] * 24


def test_segments_cover_the_clip_without_gaps(tmp_path):
    spec = demo(tmp_path, "clips.0.segment_length=10", "clips.1.num_frames=7")
    lighthouse, harbour = (cut_segments(c) for c in spec.clips)
    assert [(s.start, s.stop) for s in lighthouse] == [(0, 10), (10, 20), (20, 24)]
    assert [s.index for s in lighthouse] == [0, 1, 2]
    assert [(s.start, s.stop) for s in harbour] == [(0, 7)]  # segment_length 0: one chain
    p = plan(spec)
    assert p.clips[0].anchors == (0, 10, 20) and p.clips[1].anchors == ()
    assert len(p.segments) == 4 and p.total_frames == 31


def test_job_id_tracks_pixels_only(tmp_path):
    base = job_id(demo(tmp_path))
    assert base == job_id(demo(tmp_path)) and len(base) == 12
    for same in ("name=other", "fps=24", "post.interpolation=2", "post.loop=true", "output.crf=30",
                 f"output.uri={tmp_path}/elsewhere", "cluster.num_workers=4", "cluster.chains_per_worker=2",
                 "cluster.compile=true", "cluster.write_queue=0", "cluster.cpu_threads=3", "model.precision=bf16"):
        assert job_id(demo(tmp_path, same)) == base, same
    for changed in ("seed=1", "clips.1.seed=8", "strength=0.6", "motion.zoom=0:(1.01)", "width=144", "steps=5",
                    "clips.0.prompts.12=a lighthouse in snow", "clips.0.segment_length=8", "model.max_text_length=16",
                    "noise_mode=slerp", "color_coherence=match_frame", "clips.0.num_frames=25", "model.precision=fp8"):
        assert job_id(demo(tmp_path, changed)) != base, changed


def test_job_ids_from_before_new_settings_are_kept(tmp_path):
    """The demo's id as releases before ``model.precision`` and the GPU settings computed it: an
    upgrade resumes renders in flight instead of starting them again in a new folder."""
    assert job_id(demo(tmp_path)) == "0c8cf022ab8a"


def test_a_local_init_image_counts_by_its_bytes_wherever_the_job_folder_is(tmp_path):
    picture = np.zeros((8, 8, 3), np.uint8)
    ids = []
    for folder in ("here", "there"):
        (tmp_path / folder).mkdir()
        Image.fromarray(picture).save(tmp_path / folder / "init.png")
        (tmp_path / folder / "job.yaml").write_text(DEMO.replace("num_frames: 24,", "num_frames: 24, init_image: init.png,", 1))
        ids.append(job_id(load_job(tmp_path / folder / "job.yaml", [f"output.uri={tmp_path}"])))
    assert ids[0] == ids[1] != job_id(demo(tmp_path))  # moved, the job resumes; without the picture it is another
    picture[0, 0] = 1
    Image.fromarray(picture).save(tmp_path / "there" / "init.png")
    assert job_id(load_job(tmp_path / "there" / "job.yaml", [f"output.uri={tmp_path}"])) != ids[0]  # edited: a new job


def test_plan_output_dir_and_video(tmp_path):
    p = plan(demo(tmp_path, "post.interpolation=2"))
    assert p.output_dir == f"{tmp_path}/demo-{p.job_id}"
    assert p.video_frames == 2 * (23 * 2 + 1)
    assert p.total_passes == 2 * (4 + 23 * 2)


def test_format_plan_is_readable(tmp_path):
    spec = demo(tmp_path, "clips.0.segment_length=12")
    text = format_plan(plan(spec), spec)
    lines = text.splitlines()
    assert lines[0].startswith("job demo  id ") and "model tiny" in lines[0] and "128x128" in lines[0]
    row = next(line for line in lines if line.startswith("lighthouse "))
    assert row.split()[:5] == ["lighthouse", "24", "2", "50", "42"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "48", "3", "100", "48"]  # every frame diffused (cadence 1)
    assert "  lighthouse/anchors  frames 0, 12  (2 anchors, anchor_strength 0.6, blend 11)" in lines
    assert "  lighthouse/1  frames 12-23  (12)  from anchor 12" in lines
    assert any(line.startswith("video 48 frames") for line in lines)


def test_anchor_passes_replace_the_anchor_frames_passes(tmp_path):
    plain = plan(demo(tmp_path, "clips.1.num_frames=2")).clips[0].passes
    assert plain == 4 + 23 * 2  # strength 0.5 of 4 steps: 2 passes a frame after the first
    strong = plan(demo(tmp_path, "clips.1.num_frames=2", "segment_length=6", "anchor_strength=0.9")).clips[0]
    assert strong.anchors == (0, 6, 12, 18)
    assert strong.passes == plain - 3 * 2 + 3 * 4  # anchors 6, 12, 18 run 4 passes (round(4 * 0.1) = 0)
