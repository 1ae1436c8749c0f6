"""3D camera motion (Deforum's 3D mode) with ``depth: none``: the picture is a plane facing the
camera, so each frame's move is a homography. Checked against closed forms: the 2D moves it must
equal, and the pinhole projection of the plane's points done point by point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deforum_ray.frame.loop import Chain, FrameSchedules, LoopState, run_chain
from deforum_ray.frame.motion import (TRANSLATION_SCALE, camera_matrix, compose, depth_grid, motion_matrix, rigid_move,
                                     perspective_grid, warp)
from deforum_ray.frame.prompts import encode_prompts
from deforum_ray.job.plan import format_plan, job_id, plan
from deforum_ray.job.spec import SpecError, load_job
from deforum_ray.model.loading import build_tiny

STILL = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A 3x3 forward map applied to (N, 2) centred pixel points, with the perspective divide."""
    mapped = np.c_[points, np.ones(len(points))] @ matrix.T
    return mapped[:, :2] / mapped[:, 2:]


def projected(points: np.ndarray, translation, rotation, fov: float, height: int) -> np.ndarray:
    """Closed form, point by point: each pixel is a point of the plane at distance 1 seen by a
    pinhole; the camera moves as Deforum's does (pytorch3d's X @ R + T, R = Rx Ry Rz) and sees it again."""
    focal = height / 2 / math.tan(math.radians(fov) / 2)
    world = np.c_[points / focal, np.ones(len(points))]
    a, b, c = (math.radians(r) for r in rotation)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    moved = world @ (rx @ ry @ rz) + np.array([-translation[0], translation[1], -translation[2]]) * TRANSLATION_SCALE
    return focal * moved[:, :2] / moved[:, 2:]


GRID = np.array([[x, y] for x in (-200.0, -37.5, 0.0, 64.0, 250.0) for y in (-120.0, 0.0, 17.0, 140.0)])


def test_translation_z_alone_is_the_2d_zoom_it_implies():
    for tz in (-30.0, 1.75, 10.0, 120.0):
        zoom = 1 / (1 - tz * TRANSLATION_SCALE)  # the plane comes nearer: everything grows by its distance ratio
        np.testing.assert_allclose(camera_matrix((0, 0, tz), (0, 0, 0), 70, 512), motion_matrix(zoom, 0, 0, 0),
                                   rtol=0, atol=1e-12)


def test_rotation_3d_z_is_angle_and_x_y_translations_move_as_deforum_does():
    for degrees in (-7.0, 0.5, 30.0):
        np.testing.assert_allclose(camera_matrix((0, 0, 0), (0, 0, degrees), 70, 512), motion_matrix(1, degrees, 0, 0),
                                   rtol=0, atol=1e-12)
    # translation_x > 0: the camera moves right, the picture left, by focal * 1/200 pixels a unit
    focal = 256 / math.tan(math.radians(35))
    np.testing.assert_allclose(camera_matrix((10, 0, 0), (0, 0, 0), 70, 512), motion_matrix(1, 0, -focal * 0.05, 0),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(camera_matrix((0, 4, 0), (0, 0, 0), 70, 512), motion_matrix(1, 0, 0, focal * 0.02),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize(("translation", "rotation", "fov"), [
    ((0, 0, 0), (0, 0.8, 0), 70),  # a small pan: the homography of a plane
    ((0, 0, 0), (-1.5, 0, 0), 40),  # a tilt
    ((3, -2, 5), (0.7, -1.2, 2.0), 55),  # everything at once
])
def test_a_camera_move_maps_every_point_of_the_plane_where_the_pinhole_sees_it(translation, rotation, fov):
    matrix = camera_matrix(translation, rotation, fov, 384)
    assert matrix[2, 0] != 0 or matrix[2, 1] != 0  # a true perspective map, not an affine one
    np.testing.assert_allclose(apply(matrix, GRID), projected(GRID, translation, rotation, fov, 384), rtol=0, atol=1e-9)


def test_a_perspective_warp_samples_each_cell_at_the_inverse_map_of_its_centre():
    """Bilinear sampling reproduces a linear ramp exactly, so away from the edges the warped ramp
    is the ramp at H^-1 of each cell centre: a closed form for the perspective grid."""
    h, w = 24, 32
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5 - h / 2,
                            torch.arange(w, dtype=torch.float64) + 0.5 - w / 2, indexing="ij")
    ramp = (0.3 * xs - 0.7 * ys + 2.0)[None, None].float()
    matrix = camera_matrix((1, -1, 2), (0.6, -0.9, 1.0), 60, h * 8)
    out = warp(ramp, matrix, "bilinear", "border")[0, 0].double()
    cells = np.diag([1 / 8, 1 / 8, 1]) @ matrix @ np.diag([8, 8, 1])
    centres = np.c_[xs.flatten().numpy(), ys.flatten().numpy()]
    source = apply(np.linalg.inv(cells), centres)
    expected = torch.from_numpy(0.3 * source[:, 0] - 0.7 * source[:, 1] + 2.0).reshape(h, w)
    inner = (slice(3, -3), slice(3, -3))
    torch.testing.assert_close(out[inner], expected[inner], rtol=0, atol=1e-5)
    # A homography scaled as a whole is the same map, and an affine one takes the 2D path exactly.
    torch.testing.assert_close(warp(ramp, matrix * 3.0, "bilinear", "border"), warp(ramp, matrix, "bilinear", "border"),
                               rtol=0, atol=1e-6)
    zoom = camera_matrix((0, 0, 8), (0, 0, 0), 60, h * 8)
    assert torch.equal(warp(ramp, zoom * 2.0), warp(ramp, zoom))


def test_moves_over_several_frames_compose_as_one_homography():
    moves = [camera_matrix((1, 0.5, 2), (0.3, -0.4, 0.5 * i), 70, 256) for i in range(4)]
    step_by_step = GRID
    for m in moves:
        step_by_step = apply(m, step_by_step)
    np.testing.assert_allclose(apply(compose(moves), GRID), step_by_step, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("translation", "rotation"), [((0, 0, 6), (0, 0, 0)), ((3, -2, 5), (0.7, -1.2, 2.0)),
                                                       ((0, 0, 0), (0, 1.5, 0))])
def test_a_depth_map_of_one_distance_is_the_plane_and_its_homography(translation, rotation):
    h, w = 24, 40
    plane = depth_grid(torch.ones(h, w, dtype=torch.float64), rigid_move(translation, rotation), 60, h * 8)
    exact = perspective_grid(camera_matrix(translation, rotation, 60, h * 8), h, w, 8, torch.device("cpu"))
    torch.testing.assert_close(plane, exact, rtol=0, atol=1e-6)


def test_with_two_planes_the_near_one_moves_more_by_the_pinhole_ratio():
    """A sideways camera move shifts a point by focal * move / distance: the left half at distance 1
    moves three times as far as the right half at distance 3."""
    h, w = 16, 64
    depth = torch.ones(h, w, dtype=torch.float64)
    depth[:, w // 2:] = 3.0
    move = 8.0  # translation_x: the camera right by 8/200 of the near plane's distance
    grid = depth_grid(depth, rigid_move((move, 0, 0), (0, 0, 0)), 60, h * 8)
    identity = perspective_grid(np.eye(3), h, w, 8, torch.device("cpu"))
    shift_cells = (grid - identity)[0, ..., 0] * (w / 2)  # where each cell samples, minus where it is, in cells
    focal_cells = h / 2 / math.tan(math.radians(30))
    near, far = shift_cells[:, 4:w // 2 - 8], shift_cells[:, w // 2 + 8:-4]  # away from the edge between them
    # The picture moves left, so each cell samples to its right: by focal * 0.04 / distance cells.
    torch.testing.assert_close(near, torch.full_like(near, focal_cells * move / 200 / 1.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(far, torch.full_like(far, focal_cells * move / 200 / 3.0), rtol=0, atol=1e-6)


def spec3d(tmp_path, **motion):
    return load_job({"name": "cam", "model": "tiny", "width": 48, "height": 32, "seed": 2, "noise_mode": "slerp",
                     "motion": {"mode": "3d", "zoom": "0:(1)", "translation_z": "0:(4)", "rotation_3d_y": "0:(0.5)",
                                "translation_x": "0:(1)", **motion},
                     "clips": [{"name": "a", "num_frames": 9, "prompts": {0: "a red fox"}}],
                     "output": {"uri": str(tmp_path)}})


def test_a_3d_clip_renders_and_resumes_bit_exactly_through_its_loop_state(tmp_path):
    tiny = build_tiny(seed=0)
    spec = spec3d(tmp_path)
    clip = spec.clips[0]
    schedules = FrameSchedules.of(clip, spec.height)
    np.testing.assert_allclose(schedules.motion(3), camera_matrix((1, 0, 4), (0, 0.5, 0), 70, 32), rtol=0, atol=0)
    embeddings = encode_prompts(tiny, ["a red fox"])
    straight: list[torch.Tensor] = []
    run_chain(Chain(tiny, clip, 48, 32, embeddings), LoopState(), 9, lambda n, z, s: straight.append(z))
    resumed: list[torch.Tensor] = []
    state = run_chain(Chain(tiny, clip, 48, 32, embeddings), LoopState(), 4, lambda n, z, s: resumed.append(z))
    restored = LoopState.from_tensors(state.tensors())
    run_chain(Chain(tiny, clip, 48, 32, embeddings), restored, 9, lambda n, z, s: resumed.append(z))
    assert len(resumed) == 9 and all(torch.equal(a, b) for a, b in zip(straight, resumed))
    flat: list[torch.Tensor] = []  # the same clip in 2d (a still camera) renders other frames
    still = load_job({**_tree(spec), "motion": {"mode": "2d"}})
    run_chain(Chain(tiny, still.clips[0], 48, 32, embeddings), LoopState(), 9, lambda n, z, s: flat.append(z))
    assert not torch.equal(flat[-1], straight[-1])


def _tree(spec) -> dict:
    from deforum_ray.job.spec import spec_to_dict

    tree = spec_to_dict(spec)
    tree.pop("clips")
    return {**tree, "clips": [{"name": "a", "num_frames": 9, "prompts": {0: "a red fox"}}]}


def test_the_plan_names_the_mode_and_a_2d_jobs_id_is_unchanged_by_3d_keys(tmp_path):
    spec = spec3d(tmp_path)
    text = format_plan(plan(spec), spec)
    assert "motion: a 3d (depth none, fov 0:(70))" in text.splitlines()
    plain = load_job({"name": "p", "model": "tiny", "width": 48, "height": 32,
                      "clips": [{"name": "a", "num_frames": 3, "prompts": {0: "x"}}], "output": {"uri": str(tmp_path)}})
    same = load_job({"name": "p", "model": "tiny", "width": 48, "height": 32, "motion": {"mode": "2d", "fov": "0:(30)"},
                     "clips": [{"name": "a", "num_frames": 3, "prompts": {0: "x"}}], "output": {"uri": str(tmp_path)}})
    assert job_id(plain) == job_id(same)  # fov moves nothing in 2d
    assert "motion:" not in format_plan(plan(plain), plain)


@pytest.mark.parametrize(("motion", "message"), [
    ({"zoom": "0:(1.02)"}, "motion.zoom: moves only in motion.mode 2d; clip 'a' is 3d and it is 1.02 at frame 0 "
                           "(in 3d: motion.translation_z)"),
    ({"mode": "2d", "rotation_3d_x": "0:(0), 4:(2)"}, "motion.rotation_3d_x: moves only in motion.mode 3d; clip 'a' "
                                                      "is 2d and it is 0.5 at frame 1"),
    ({"near": "0:(500), 5:(20000)"}, "motion.near: must be < motion.far, but is 12200 >= 10000 at frame 3 of clip 'a'"),
    ({"fov": "0:(180)"}, "motion.fov: must be (0, 180), but is 180 at frame 0"),
    ({"translation_z": "0:(200)"}, "motion.translation_z: must be < 200, but is 200 at frame 0"),
    ({"depth": "midas"}, "motion.depth: unknown depth model 'midas'; expected none, depth-anything-v2-small, a "
                         "Hugging Face repo id (org/name) or a folder"),
    ({"depth": "depth-anything-v2-smal"}, "motion.depth: unknown depth model 'depth-anything-v2-smal' (did you mean "
                                          "'depth-anything-v2-small'?)"),
    ({"depth": "./no/such/depth"}, "motion.depth: no depth model folder at './no/such/depth'"),
    ({"mode": "2d", "depth": "depth-anything-v2-small"}, "motion.depth: a depth model moves only a motion.mode 3d "
                                                         "camera; clip 'a' is 2d"),
])
def test_bad_3d_motion_is_named(tmp_path, motion, message):
    with pytest.raises(SpecError) as caught:
        spec3d(tmp_path, **motion)
    assert message in str(caught.value)


def test_a_3d_render_with_anchors_and_cadence(tmp_path, tiny_pool):
    """Through the worker and the store: anchors carry the composed camera, segments and cadence
    warp by it, and every frame is stored once."""
    from deforum_ray.render.driver import render
    from deforum_ray.store import RenderStore

    spec = load_job({**_tree(spec3d(tmp_path / "out")), "segment_length": 5, "cadence": 2})
    result = render(spec, pool=tiny_pool, progress=False)
    rows = RenderStore(result.output_dir).read_runlog()
    assert sorted(r["frame"] for r in rows if r["segment"] >= 0) == list(range(9))
    assert sorted(r["frame"] for r in rows if r["segment"] == -1) == [0, 5]
    assert result.final.frames == 9
