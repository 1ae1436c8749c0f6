"""The final stage made while the job renders (render.following, progress.FollowingStage): it
reads each segment once the driver says that segment is final, in the order the stage after the
render reads them, and makes the same videos; a cancelled one leaves nothing in the store."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from deforum_ray.job.plan import plan
from deforum_ray.job.spec import load_job
from deforum_ray.post.finalize import FINAL, finalize
from deforum_ray.render.driver import render
from deforum_ray.render.progress import FollowingStage, StageCancelled
from deforum_ray.store import RenderStore
from test_finalize import decoded, job_folder
from test_ray import one_long_clip


def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout} s: {check()!r}")


def rendered_outputs(store: RenderStore, names: list[str]) -> dict[str, bytes]:
    return {name: Path(store.path(name)).read_bytes() for name in names}


@pytest.mark.parametrize("overrides", [(), ("post.interpolation=2", "post.loop=true", "post.transition=crossfade",
                                             "post.crossfade_frames=2"),
                                        ("post.interpolation=2", "post.interpolation_method=ffmpeg")])
def test_segments_are_encoded_as_they_become_final_into_the_videos_the_stage_after_makes(tmp_path, overrides):
    spec, render_plan, store = job_folder(tmp_path, "segment_length=2", *overrides)
    assert [(s.clip, s.index) for s in render_plan.segments] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    stage = FollowingStage(store, render_plan, spec, final=[("b", 1)])  # b/1 finished before this render
    assert eventually(lambda: stage.progress() == (0, ("a", 0)))  # nothing final yet: it waits for the first
    stage.segments_done([("a", 0)])
    if not overrides:  # frames go straight to the encoder: exactly a/0's two frames are in
        assert eventually(lambda: stage.progress() == (2, ("a", 1)))
    else:  # an in-between or a held crossfade frame may wait for the next segment
        assert eventually(lambda: stage.progress()[1] == ("a", 1))
    stage.segments_done([("b", 0)])  # out of order: the stage still waits for a/1
    time.sleep(0.2)
    assert stage.progress()[1] == ("a", 1)
    assert store.read_json(FINAL) is None and not Path(store.path("demo.mp4")).exists()  # nothing written early
    stage.segments_done([("a", 1), ("a", 2)])
    during = stage.result()
    assert during.encoded and during.frames == render_plan.video_frames == len(decoded(during.video))

    names = ["demo.mp4", "demo-a.mp4", "demo-b.mp4", "demo-a-sheet.png", "demo-b-sheet.png"]
    made_during = rendered_outputs(store, names)
    key_during = store.read_json(FINAL)["key"]
    store.discard(FINAL)
    after = finalize(store, render_plan, spec)
    assert after.encoded and store.read_json(FINAL)["key"] == key_during
    assert rendered_outputs(store, names) == made_during  # byte for byte: the same frames, the same encode


def test_a_cancelled_stage_raises_and_writes_nothing(tmp_path):
    spec, render_plan, store = job_folder(tmp_path, "segment_length=2")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    stage = FollowingStage(store, render_plan, spec, final=[("a", 0)])
    assert eventually(lambda: stage.progress()[1] == ("a", 1))
    stage.cancel()
    with pytest.raises(StageCancelled, match="clip 'a': segment 1 will not be rendered by this run"):
        stage.result()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_render_makes_its_video_while_rendering_the_same_as_after(tiny_pool, tmp_path):
    """Through Ray, on the session's resident worker (segment after segment, each told to the
    stage as it returns): the video of a segmented clip made during the render decodes to the
    frames, and is byte for byte what the stage makes after the render from the same store."""
    spec = load_job(one_long_clip(tmp_path, frames=24), ["cluster.chains_per_worker=1"])
    result = render(spec, pool=tiny_pool, progress=False)
    store = RenderStore(result.output_dir)
    video = Path(result.video).read_bytes()
    frames = decoded(result.video)
    assert result.final.encoded and len(frames) == 24
    stored = [store.read_frame("c", n // 8, n) for n in range(24)]
    error = np.array([[np.abs(f.astype(int) - s.astype(int)).mean() for s in stored] for f in frames])
    assert list(error.argmin(axis=1)) == list(range(24)) and error.diagonal().max() < 6  # each frame in its place
    store.discard(FINAL)
    after = finalize(store, plan(spec), spec)
    assert after.encoded and Path(after.video).read_bytes() == video


def test_the_driver_side_takes_finished_segments_as_final_and_all_of_them_at_the_end(ray_cluster, tmp_path):
    """StageDuringRender: segments of chains this render does not run are final from the start;
    once every chain has returned, every segment is, even one whose ChainDone never reached it."""
    from deforum_ray.job.plan import ChainKind, ChainTask
    from deforum_ray.render.following import StageDuringRender

    spec, render_plan, store = job_folder(tmp_path, "segment_length=2")
    a1 = next(s for s in render_plan.segments if (s.clip, s.index) == ("a", 1))
    pending = [ChainTask("a", a1.start, a1.stop, (a1,), ChainKind.SEGMENT)]
    stage = StageDuringRender(store, render_plan, spec, pending)
    assert ("a", 1) not in stage.final and len(stage.final) == len(render_plan.segments) - 1
    stage.start()
    try:
        final = stage.finish(progress=False)  # no chain_done for a/1: finish says it is final
    finally:
        stage.stop()
    assert final is not None and final.encoded and final.frames == render_plan.video_frames
