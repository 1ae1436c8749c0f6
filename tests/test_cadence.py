"""Diffusion cadence (Deforum's turbo): only every N-th frame of a chain (and its last) is diffused;
the frames between are the two keys around them warped to the frame and blended.

The loop is driven here through its own API with the tiny model; a render through the CLI with
segments, several chains per worker and the run log is at the end. The kill-and-resume test at
cadence 3 is in test_crash.py."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from deforum_ray.frame.loop import Chain, FrameOut, Lane, LoopState, advance, between_keys, run_chain
from deforum_ray.frame.prompts import encode_prompts
from deforum_ray.job.frames import Cadence
from deforum_ray.job.plan import frame_passes, plan
from deforum_ray.job.spec import load_job
from deforum_ray.model.depth import DepthModel
from deforum_ray.model.loading import build_tiny
from deforum_ray.render.driver import render, summary_table
from deforum_ray.store import RenderStore


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=0)


def spec_of(tmp_path: Path, frames: int, cadence: int, **top):
    job = {"name": "c", "model": "tiny", "width": 32, "height": 32, "seed": 5, "cadence": cadence,
           "noise_mode": "slerp", "color_coherence": "match_frame",
           "motion": {"zoom": "0:(1.03)", "angle": "0:(2)", "translation_x": "0:(1.5)"},
           "clips": [{"name": "a", "num_frames": frames, "prompts": {0: "a red fox", frames // 2: "a snowy hill"}}],
           "output": {"uri": str(tmp_path)}}
    job.update(top)
    return load_job(job)


def render_chain(tiny, spec, state: LoopState | None = None, stop: int | None = None) -> list[FrameOut]:
    clip = spec.clips[0]
    chain = Chain(tiny, clip, spec.width, spec.height, encode_prompts(tiny, list(clip.prompts.values())))
    outs: list[FrameOut] = []
    lane = Lane(chain, state or LoopState(), clip.num_frames if stop is None else stop, outs.append, pictures=True)
    advance([lane])
    assert lane.error is None, lane.error
    return outs


def video_frames(path: str) -> int:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path)
    next(reader)  # the header
    return sum(1 for _ in reader)


def reference_keys(start: int, stop: int, every: int) -> list[int]:
    """The definition, written out: the first frame, every ``every``-th after it, and the last."""
    return sorted({*range(start, stop, every), stop - 1})


def test_a_cadence_names_its_keys_by_arithmetic_as_the_definition_does():
    for start, length, every in itertools.product((0, 3, 12), range(1, 15), range(1, 18)):
        cadence, keys = Cadence(start, start + length, every), reference_keys(start, start + length, every)
        assert cadence.keys() == keys and len(cadence) == len(keys)
        frames = range(start, start + length)
        assert [f for f in frames if cadence.is_key(f)] == keys
        assert [cadence.next_key(f) for f in frames] == [min(k for k in keys if k >= f) for f in frames]
        assert [cadence.previous_key(f) for f in frames[1:]] == [max(k for k in keys if k < f) for f in frames[1:]]
    assert len(Cadence(0, 1_000_000, 7)) == 142_858  # a long clip costs no list
    with pytest.raises(ValueError):
        Cadence(5, 5, 2)


# N larger than the clip, N equal to it, N dividing it, N not dividing it, a one-frame clip
@pytest.mark.parametrize(("frames", "every"), [(7, 1), (7, 3), (9, 4), (8, 8), (5, 9), (1, 3), (2, 2)])
def test_every_frame_comes_once_in_order_and_only_the_keys_run_the_transformer(tmp_path, tiny, frames, every):
    spec = spec_of(tmp_path, frames, every)
    calls: list[int] = []
    hook = tiny.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        outs = render_chain(tiny, spec)
    finally:
        hook.remove()
    keys = reference_keys(0, frames, every)
    assert [o.frame for o in outs] == list(range(frames))
    assert [o.frame for o in outs if o.diffused] == keys
    passes = frame_passes(spec.clips[0])
    assert len(calls) == sum(passes[k] for k in keys) == plan(spec).clips[0].passes
    assert plan(spec).clips[0].diffused == len(keys)
    assert all(o.state.frame == o.frame + 1 for o in outs)


def test_in_betweens_are_the_keys_around_them_warped_to_the_frame_and_blended(tmp_path, tiny):
    spec = spec_of(tmp_path, 8, 3)
    clip = spec.clips[0]
    outs = {o.frame: o for o in render_chain(tiny, spec)}
    chain = Chain(tiny, clip, spec.width, spec.height, {})
    for a, b in ((0, 3), (3, 6), (6, 7)):
        for f in range(a + 1, b):
            expected = between_keys(outs[a].z, outs[b].z, a, f, b, chain.schedules, clip.motion.interpolation,
                                    clip.motion.padding)
            assert torch.equal(outs[f].z, expected), f
            assert torch.equal(outs[f].state.next_key, outs[b].z) and torch.equal(outs[f].state.latent, outs[a].z)
    # The blend itself: with the camera at rest, a straight line between the keys.
    still = spec_of(tmp_path, 8, 3, motion={"zoom": "0:(1)"})
    rest = Chain(tiny, still.clips[0], 32, 32, {})
    z_a, z_b = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    for f, w in ((1, 1 / 3), (2, 2 / 3)):
        blended = between_keys(z_a, z_b, 0, f, 3, rest.schedules, "bilinear", "border")
        torch.testing.assert_close(blended, z_a + w * (z_b - z_a), rtol=0, atol=1e-6)


def render_lanes(tiny, spec, states: list[LoopState], stop: int, depth=None) -> list[list[FrameOut]]:
    """Every clip of ``spec`` as one lane, advanced together (a worker's chains_per_worker)."""
    embeddings = encode_prompts(tiny, sorted({p for clip in spec.clips for p in clip.prompts.values()}))
    outs: list[list[FrameOut]] = [[] for _ in spec.clips]
    lanes = [Lane(Chain(tiny, clip, spec.width, spec.height, embeddings, depth_model=depth), state, stop,
                  outs[i].append, pictures=True)
             for i, (clip, state) in enumerate(zip(spec.clips, states))]
    advance(lanes)
    assert all(lane.error is None for lane in lanes)
    return outs


@pytest.mark.parametrize(("chains", "camera"), [(1, "2d"), (2, "2d"), (2, "3d with depth")])
def test_a_checkpoint_between_two_keys_resumes_bit_exactly(tmp_path, tiny, chains, camera, depth_folder):
    """The state after an in-between holds both keys (and, with a depth model, the depth each was
    seen at): saved through safetensors bytes and resumed, each chain ends with exactly the
    pictures of one that never stopped, decoded as the worker does (the frames between two keys,
    of every chain advanced together, in one VAE call)."""
    depth, motion = None, {}
    if camera != "2d":
        depth = DepthModel.load(str(depth_folder))
        motion = {"motion": {"mode": "3d", "translation_x": "0:(1.5)", "translation_z": "0:(3)",
                             "rotation_3d_y": "0:(0.8)", "depth": str(depth_folder)}}
    spec = spec_of(tmp_path, 11, 3, clips=[{"name": f"c{i}", "num_frames": 11, "seed": 5 + i,
                                            "prompts": {0: "a red fox", 5: "a snowy hill"}} for i in range(chains)],
                   **motion)
    straight = render_lanes(tiny, spec, [LoopState() for _ in range(chains)], 11, depth)
    first = render_lanes(tiny, spec, [LoopState() for _ in range(chains)], 5, depth)  # keys 0, 3, 6: 5 not out
    states = [outs[-1].state for outs in first]
    assert all(state.frame == 5 and state.next_key is not None for state in states)
    assert all((state.depth is not None and state.next_key_depth is not None) == (depth is not None)
               for state in states)
    restored = [LoopState.from_tensors(load(save(state.tensors()))) for state in states]
    assert torch.equal(restored[0].next_key, states[0].next_key.cpu())
    rest = render_lanes(tiny, spec, restored, 11, depth)
    for i in range(chains):
        frames = first[i] + rest[i]
        assert [o.frame for o in frames] == list(range(11))
        assert not rest[i][0].diffused and rest[i][1].diffused  # 5 from the saved keys, then key 6 as it was
        assert all(np.array_equal(a.picture, b.picture) for a, b in zip(straight[i], frames))


def test_run_chain_hands_on_each_frame_once_with_cadence(tmp_path, tiny):
    spec = spec_of(tmp_path, 6, 4)
    seen: list[int] = []
    state = run_chain(Chain(tiny, spec.clips[0], 32, 32, encode_prompts(tiny, ["a red fox", "a snowy hill"])),
                      LoopState(), 6, lambda n, z, s: seen.append(n))
    assert seen == list(range(6)) and state.frame == 6 and state.next_key is None


def test_a_render_with_cadence_segments_and_batched_chains(tmp_path, tiny_pool):
    """A render: a segment's keys are its own, two chains share each forward, every frame is
    stored once, and the run log and the summary say which frames were diffused."""
    out = tmp_path / "out"
    spec = spec_of(out, 14, 3, segment_length=6, cluster={"chains_per_worker": 2, "checkpoint_every": 4},
                   clips=[{"name": "a", "num_frames": 14, "prompts": {0: "a red fox"}},
                          {"name": "b", "num_frames": 5, "prompts": {0: "a quiet harbour"}, "cadence": 2,
                           "segment_length": 0}])
    result = render(spec, pool=tiny_pool, progress=False)
    rows = RenderStore(result.output_dir).read_runlog()
    frames = {(r["clip"], r["frame"]) for r in rows if r["segment"] >= 0}
    assert frames == {("a", n) for n in range(14)} | {("b", n) for n in range(5)} and result.frames == 19
    diffused = sorted((r["clip"], r["frame"]) for r in rows if r["segment"] >= 0 and r["diffused"])
    # a: segments [0, 6) [6, 12) [12, 14), each starting on its anchor; b: one chain, cadence 2
    assert diffused == [("a", n) for n in (0, 3, 5, 6, 9, 11, 12, 13)] + [("b", n) for n in (0, 2, 4)]
    assert len(diffused) == plan(spec).total_diffused
    assert sorted(r["frame"] for r in rows if r["segment"] == -1) == [0, 6, 12]  # the anchors
    assert max(r["chains"] for r in rows) == 2
    assert {r.label: r.diffused for r in result.reports} == {"a/anchors": 3, "a/0": 3, "a/1": 3, "a/2": 2, "b": 3}
    assert video_frames(result.video) == 19 and video_frames(result.final.clip_videos["a"]) == 14
    table = [line.split() for line in summary_table(result.reports).splitlines()]
    assert table[0][:3] == ["chain", "frames", "diffused"] and ["a/1", "6", "3"] in [row[:3] for row in table]
