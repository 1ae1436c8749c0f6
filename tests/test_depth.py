"""The depth model for 3D motion: a tiny random Depth Anything built here, saved to a folder and
loaded back through the code that loads real weights (never downloaded), and its map reduced to
distances on the latent grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import frame_hashes, tiny_depth_anything
from deforum_ray.model.depth import FARTHEST, NEAREST, DepthModel, DepthModelError, disparity_to_distance


def frame(height: int = 64, width: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


def test_a_depth_model_loads_from_a_folder_and_gives_distances_on_the_latent_grid(depth_folder):
    depth = DepthModel.load(str(depth_folder))
    assert (depth.size, depth.patch, depth.mean) == (56, 14, (0.5, 0.5, 0.5))  # its preprocessor config is read
    rgb = frame()
    x = depth.pixel_values(rgb)
    assert x.shape == (1, 3, 56, 84)  # the shorter side at size, each side a multiple of the patch
    distances = depth.latent_depth(rgb, (8, 12))
    assert distances.shape == (8, 12) and distances.dtype == torch.float32
    assert float(distances.min()) == NEAREST and float(distances.max()) == FARTHEST
    # The closed form: the model's own map, averaged over each cell, scaled to [1, 2] nearest first.
    with torch.no_grad():
        predicted = tiny_depth_anything()(pixel_values=x).predicted_depth
    pooled = F.adaptive_avg_pool2d(predicted[None], (8, 12))[0, 0]
    expected = 1 + (pooled.max() - pooled) / (pooled.max() - pooled.min())
    torch.testing.assert_close(distances, expected, rtol=0, atol=1e-5)
    assert torch.equal(depth.latent_depth(rgb, (8, 12)), distances)  # the same frame, the same bits


def test_flat_or_broken_maps_are_the_plane_and_missing_weights_are_one_line(tmp_path):
    assert torch.equal(disparity_to_distance(torch.full((4, 4), 3.0)), torch.full((4, 4), NEAREST))
    assert torch.equal(disparity_to_distance(torch.tensor([[float("nan"), 1.0]])), torch.full((1, 2), NEAREST))
    ramp = disparity_to_distance(torch.tensor([[4.0, 3.0, 2.0]]))
    torch.testing.assert_close(ramp, torch.tensor([[1.0, 1.5, 2.0]]))
    with pytest.raises(DepthModelError, match=r"^motion\.depth: depth model 'nobody/no-such-depth' is neither a folder "
                                              r"nor in the local Hugging Face cache; "
                                              r"run deforum-ray fetch-model --depth nobody/no-such-depth$"):
        DepthModel.load("nobody/no-such-depth")
    with pytest.raises(DepthModelError, match="cannot load depth model"):
        DepthModel.load(str(tmp_path))  # a folder without a model


# --- depth in the frame loop ----------------------------------------------------------------------

def camera_spec(tmp_path, depth: str, frames: int = 7, **top):
    from deforum_ray.job.spec import load_job

    job = {"name": "d", "model": "tiny", "width": 48, "height": 32, "seed": 3, "cadence": 3,
           "motion": {"mode": "3d", "translation_x": "0:(6)", "translation_z": "0:(5)", "rotation_3d_y": "0:(1.5)",
                      "fov": "0:(60), 6:(80)", "depth": depth},
           "clips": [{"name": "a", "num_frames": frames, "prompts": {0: "a red fox"}}], "output": {"uri": str(tmp_path)}}
    return load_job({**job, **top})


def test_each_key_is_seen_by_the_depth_model_and_its_cells_move_by_that_depth(tmp_path, depth_folder):
    """Closed forms: a key's depth is the model's on its own decoded picture; an in-between is the
    keys around it reprojected cell by cell through the composed rigid camera moves (each frame's
    rotation and translation, Deforum's units), through the later frame's lens."""
    from deforum_ray.frame.loop import Chain, LoopState, between_keys, run_chain
    from deforum_ray.frame.motion import compose, rigid_move, warp_depth
    from deforum_ray.frame.prompts import encode_prompts
    from deforum_ray.model.loading import build_tiny
    from deforum_ray.model.vae import decode

    tiny, depth = build_tiny(seed=0), DepthModel.load(str(depth_folder))
    spec = camera_spec(tmp_path, str(depth_folder))
    clip = spec.clips[0]
    chain = Chain(tiny, clip, spec.width, spec.height, encode_prompts(tiny, ["a red fox"]), depth_model=depth)
    outs: dict[int, tuple] = {}
    run_chain(chain, LoopState(), 7, lambda n, z, state: outs.setdefault(n, (z, state)))
    for key in (0, 3, 6):
        z, state = outs[key]
        assert torch.equal(state.depth, depth.latent_depth(decode(tiny, z), (4, 6)))
    z_a, z_b, d_a, d_b = outs[0][0], outs[3][0], outs[0][1].depth, outs[3][1].depth
    per_frame = [rigid_move((6, 0, 5), (0, 1.5, 0))] * 3  # frames 1, 2, 3 each move the camera the same way
    fov_2, fov_3 = 60 + 20 * 2 / 6, 60 + 20 * 3 / 6
    for f, fov in ((1, 60 + 20 / 6), (2, fov_2)):
        forward = warp_depth(z_a, compose(per_frame[:f], size=4), d_a, fov, 32, "bicubic", "reflection")
        back = warp_depth(z_b, np.linalg.inv(compose(per_frame[f:], size=4)), d_b, fov_3, 32, "bicubic", "reflection")
        torch.testing.assert_close(outs[f][0], torch.lerp(forward, back, f / 3), rtol=0, atol=1e-6)
    # The depth matters: as a plane (depth none) the in-between is another picture.
    plane = between_keys(z_a, z_b, 0, 1, 3, chain.schedules, "bicubic", "reflection")
    assert float((plane - outs[1][0]).abs().mean()) > 1e-3
    assert fov_2 != fov_3  # the back warp sees through frame 3's lens, not frame 2's


def test_a_render_with_a_depth_model_keeps_depth_in_anchors_and_checkpoints(tmp_path, tiny_pool, depth_folder):
    """Through the worker and the store: anchors and checkpoints
    hold the depth their frames were seen at; segments ease toward the next anchor moved by its
    depth; the pictures differ from the same camera over a plane."""
    from deforum_ray.render.driver import render
    from deforum_ray.store import RenderStore

    top = {"segment_length": 6, "cluster": {"checkpoint_every": 2}}
    result = render(camera_spec(tmp_path / "out", str(depth_folder), 12, **top), pool=tiny_pool, progress=False)
    store = RenderStore(result.output_dir)
    assert result.final.frames == 12
    assert sorted(store.anchor_frames("a")) == [0, 6]
    anchor = store.get_tensors(store.anchor_rel("a", 6))
    assert anchor["depth"].shape == (4, 6) and float(anchor["depth"].min()) >= 1.0
    checkpoint = store.get_checkpoint("a", 0, 2)
    assert {"depth", "next_key_depth"} <= set(checkpoint)  # frame 2 lies between keys 0 and 3
    plane = render(camera_spec(tmp_path / "plane", "none", 12, **top), pool=tiny_pool, progress=False)
    seen, flat = frame_hashes(Path(result.output_dir)), frame_hashes(Path(plane.output_dir))
    assert len(seen) == 12 and [name for name in seen if seen[name] == flat[name]] == ["segments/a/0/frames/000000.png"]


def test_a_depth_model_that_is_not_there_fails_the_render_in_one_line_before_any_frame(tmp_path, tiny_pool):
    from deforum_ray.render.driver import render
    from deforum_ray.store import RenderStore

    spec = camera_spec(tmp_path / "out", "nobody/no-such-depth")
    with pytest.raises(RuntimeError) as caught:
        render(spec, pool=tiny_pool, progress=False)
    assert str(caught.value) == ("motion.depth: depth model 'nobody/no-such-depth' is neither a folder nor in the local "
                                 "Hugging Face cache; run deforum-ray fetch-model --depth nobody/no-such-depth")
    (job_dir,) = (tmp_path / "out").iterdir()
    assert RenderStore(str(job_dir)).read_runlog() == []  # not one frame was tried
