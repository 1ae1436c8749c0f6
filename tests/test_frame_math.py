"""The frame loop's pure pieces: schedules, img2img mixing, Euler steps, noise, motion, colour, prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import REPO
from deforum_ray.frame.color import channel_stats, match_channel_stats
from deforum_ray.model.loading import build_tiny
from deforum_ray.frame.motion import compose, motion_matrix, warp
from deforum_ray.frame.noise import derive_seed, frame_noise, gaussian, slerp
from deforum_ray.frame.prompts import blend_weights, embedding_at, encode_prompts
from deforum_ray.frame.sampling import (
    denoise,
    euler_step,
    get_schedule,
    image_seq_len,
    latent_image_ids,
    mix_noise,
    pack,
    shift_mu,
    start_index,
    unpack,
)

# --- timestep schedules ---------------------------------------------------------------------------


def test_schnell_schedule_is_unshifted_linspace():
    assert get_schedule(4, image_seq_len(512, 512), shift=False) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert get_schedule(4, image_seq_len(1024, 1024), shift=False) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_dev_schedule_512_matches_hand_computation():
    # 512x512 -> 32x32 packed tokens = 1024; mu = 0.5 + (1.15-0.5)/(4096-256) * (1024-256) = 0.63
    assert image_seq_len(512, 512) == 1024
    assert shift_mu(1024) == pytest.approx(0.63)
    # e^0.63 = 1.877611; t' = 1.877611 / (1.877611 + 1/t - 1)
    expected = [1.0, 0.849235, 0.652489, 0.384945, 0.0]
    assert get_schedule(4, 1024, shift=True) == pytest.approx(expected, abs=1e-6)


def test_dev_schedule_1024_matches_hand_computation():
    # 1024x1024 -> 4096 tokens; mu = 1.15, e^1.15 = 3.158193
    assert image_seq_len(1024, 1024) == 4096
    expected = [1.0, 0.904531, 0.759511, 0.512844, 0.0]
    assert get_schedule(4, 4096, shift=True) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("steps", "size"), [(28, 512), (28, 1024), (4, 768)])
def test_dev_schedule_agrees_with_diffusers_scheduler(steps, size):
    from diffusers import FlowMatchEulerDiscreteScheduler

    seq = image_seq_len(size, size)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=shift_mu(seq))
    assert get_schedule(steps, seq, shift=True) == pytest.approx(scheduler.sigmas.tolist(), abs=1e-6)


# --- img2img: start index, noise mix, Euler, pack ------------------------------------------------------


@pytest.mark.parametrize(("steps", "strength", "k"), [(4, 0.5, 2), (4, 1.0, 0), (4, 0.75, 1), (28, 0.5, 14), (5, 0.3, 4)])
def test_start_index(steps, strength, k):
    assert start_index(steps, strength) == k


def test_strength_half_with_four_steps_is_two_transformer_passes():
    model = build_tiny(seed=0)
    emb = encode_prompts(model, ["a lighthouse"])["a lighthouse"]
    calls = []
    model.transformer.register_forward_hook(lambda *_: calls.append(1))
    ids, txt_ids = latent_image_ids(8, 8), torch.zeros(emb.tokens.shape[0], 3)

    def velocity(x, t):
        return model.transformer(hidden_states=x, encoder_hidden_states=emb.tokens[None],
                                 pooled_projections=emb.pooled[None], timestep=torch.tensor([t]),
                                 img_ids=ids, txt_ids=txt_ids, return_dict=False)[0]

    timesteps = get_schedule(4, 16, shift=False)
    x = pack(torch.randn(1, 16, 8, 8))
    with torch.no_grad():
        out = denoise(velocity, x, timesteps, start_index(4, 0.5))
    assert len(calls) == 2
    assert out.shape == x.shape and not torch.equal(out, x)
    calls.clear()
    with torch.no_grad():
        denoise(velocity, x, timesteps, start_index(4, 1.0))
    assert len(calls) == 4


def test_denoise_runs_the_euler_steps_it_should():
    seen = []

    def velocity(x, t):
        seen.append(t)
        return torch.full_like(x, 2.0)

    x = torch.zeros(1, 4, 8)
    out = denoise(velocity, x, [1.0, 0.75, 0.5, 0.25, 0.0], start=2)
    assert seen == [0.5, 0.25]
    assert torch.allclose(out, torch.full_like(x, -1.0))  # x + (0.25-0.5)*2 + (0-0.25)*2
    assert torch.equal(euler_step(x, torch.ones_like(x), 0.5, 0.25), torch.full_like(x, -0.25))


def test_noise_mix_is_the_flow_matching_point():
    z, eps = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    for t in (0.0, 0.3, 0.5, 1.0):
        assert torch.allclose(mix_noise(z, eps, t), (1 - t) * z + t * eps)
    assert torch.allclose(mix_noise(z, eps, 0.5, noise_scale=0.5), 0.5 * z + 0.25 * eps)
    assert torch.equal(mix_noise(z, eps, 1.0), eps)


def test_pack_unpack_round_trip_and_match_diffusers():
    from diffusers import FluxPipeline

    z = torch.randn(2, 16, 6, 10)
    packed = pack(z)
    assert packed.shape == (2, 15, 64)
    assert torch.equal(packed, FluxPipeline._pack_latents(z, 2, 16, 6, 10))
    assert torch.equal(unpack(packed, 6, 10), z)
    assert torch.equal(latent_image_ids(6, 10), FluxPipeline._prepare_latent_image_ids(1, 3, 5, "cpu", torch.float32))


# --- noise modes -----------------------------------------------------------------------------------------

SHAPE = (1, 16, 16, 16)


def test_derive_seed_is_stable_and_separates_parts():
    assert derive_seed(42, "intro", 3) == derive_seed(42, "intro", 3)
    assert len({derive_seed(42, "intro", 3), derive_seed(42, "intro", 4), derive_seed(42, "outro", 3),
                derive_seed(43, "intro", 3), derive_seed(4, "2intro", 3)}) == 5
    assert 0 <= derive_seed(1, "a") < 2**63


def test_noise_never_touches_the_global_rng():
    state = torch.get_rng_state()
    for mode in ("fixed", "incremental", "subseed", "slerp"):
        frame_noise(mode, SHAPE, 1, "c", 3, prev=gaussian(SHAPE, 9), subseed=2, subseed_strength=0.5)
    assert torch.equal(torch.get_rng_state(), state)


def test_fixed_noise_is_identical_across_frames_and_deterministic():
    frames = [frame_noise("fixed", SHAPE, 42, "intro", n) for n in range(4)]
    assert all(torch.equal(f, frames[0]) for f in frames)
    assert not torch.equal(frames[0], frame_noise("fixed", SHAPE, 43, "intro", 0))
    assert not torch.equal(frames[0], frame_noise("fixed", SHAPE, 42, "outro", 0))  # clips differ


def test_incremental_noise_differs_per_frame_and_repeats_for_a_seed():
    a = [frame_noise("incremental", SHAPE, 42, "intro", n) for n in range(3)]
    b = [frame_noise("incremental", SHAPE, 42, "intro", n) for n in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert torch.equal(a[1], frame_noise("incremental", SHAPE, 43, "intro", 0))  # seed + n


def test_subseed_noise_moves_from_seed_to_subseed():
    base = frame_noise("fixed", SHAPE, 42, "c", 0)
    other = frame_noise("fixed", SHAPE, 7, "c", 0)
    assert torch.equal(frame_noise("subseed", SHAPE, 42, "c", 5, subseed=7, subseed_strength=0.0), base)
    assert torch.allclose(frame_noise("subseed", SHAPE, 42, "c", 5, subseed=7, subseed_strength=1.0), other, atol=1e-5)
    half = frame_noise("subseed", SHAPE, 42, "c", 5, subseed=7, subseed_strength=0.5)
    assert torch.allclose(half, frame_noise("subseed", SHAPE, 42, "c", 9, subseed=7, subseed_strength=0.5))
    cos = lambda x, y: float((x * y).sum() / (x.norm() * y.norm()))  # noqa: E731
    assert cos(half, base) == pytest.approx(cos(half, other), abs=0.02) and cos(half, base) > 0.5


def test_slerp_noise_walks_with_unit_variance():
    eps = frame_noise("slerp", SHAPE, 42, "c", 0)
    lerp = eps.clone()
    for n in range(1, 60):
        fresh = frame_noise("slerp", SHAPE, 42, "c", n, prev=eps, delta=0.1)
        assert 0.9 < float((fresh * eps).sum() / (fresh.norm() * eps.norm())) < 1.0  # a small step
        eps = fresh
        lerp = torch.lerp(lerp, gaussian(SHAPE, derive_seed(42, "c", n)), 0.1)
    assert float(eps.std()) == pytest.approx(1.0, abs=0.03)
    assert float(lerp.std()) < 0.5  # what slerp avoids: a straight blend shrinks the noise
    again = frame_noise("slerp", SHAPE, 42, "c", 1, prev=frame_noise("slerp", SHAPE, 42, "c", 0), delta=0.1)
    assert torch.equal(again, frame_noise("slerp", SHAPE, 42, "c", 1, prev=frame_noise("slerp", SHAPE, 42, "c", 0), delta=0.1))


def test_slerp_endpoints_and_parallel_inputs():
    a, b = gaussian(SHAPE, 1), gaussian(SHAPE, 2)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-6)


def test_unknown_noise_mode():
    with pytest.raises(ValueError, match="noise_mode"):
        frame_noise("perlin", SHAPE, 1, "c", 0)


# --- motion ------------------------------------------------------------------------------------------------


def blob(h: int, w: int, cy: float, cx: float, sigma: float = 2.0) -> torch.Tensor:
    """A smooth bump centred at continuous (cx, cy) in cell units, pixel centres at +0.5."""
    y = torch.arange(h, dtype=torch.float64)[:, None] + 0.5
    x = torch.arange(w, dtype=torch.float64)[None, :] + 0.5
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)).float()[None, None]


def centroid(z: torch.Tensor) -> tuple[float, float]:
    img = z[0, 0].double().clamp_min(0)
    y = torch.arange(img.shape[0], dtype=torch.float64)[:, None] + 0.5
    x = torch.arange(img.shape[1], dtype=torch.float64)[None, :] + 0.5
    total = img.sum()
    return float((img * x).sum() / total), float((img * y).sum() / total)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("padding", ["reflection", "border", "zeros"])
def test_identity_motion_returns_the_input(mode, padding):
    z = torch.randn(2, 16, 24, 40)
    assert (warp(z, motion_matrix(1.0, 0.0, 0.0, 0.0), mode, padding) - z).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("k", "j"), [(1, 0), (0, 1), (3, -2), (-4, 5)])
def test_translation_of_8k_pixels_moves_exactly_k_cells(mode, k, j):
    z = torch.randn(1, 16, 32, 48)
    out = warp(z, motion_matrix(1.0, 0.0, 8.0 * k, 8.0 * j), mode, "zeros")
    # out[y, x] = z[y - j, x - k] wherever the source is inside the frame
    ys, xs = slice(max(j, 0), 32 + min(j, 0)), slice(max(k, 0), 48 + min(k, 0))
    src_y, src_x = slice(max(-j, 0), 32 - max(j, 0)), slice(max(-k, 0), 48 - max(k, 0))
    assert (out[..., ys, xs] - z[..., src_y, src_x]).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_translation_of_4_pixels_moves_half_a_cell(mode):
    ramp = torch.arange(40, dtype=torch.float32).repeat(1, 1, 24, 1)  # f(x) = x reproduces under both kernels
    out = warp(ramp, motion_matrix(1.0, 0.0, 4.0, 0.0), mode, "border")
    assert (out[..., 3:-3] - (ramp[..., 3:-3] - 0.5)).abs().max() < 1e-5
    z = torch.randn(1, 4, 16, 16)
    half = warp(z, motion_matrix(1.0, 0.0, 4.0, 0.0), "bilinear", "zeros")
    assert torch.allclose(half[..., 1:], 0.5 * (z[..., 1:] + z[..., :-1]), atol=1e-5)  # never rounded to a cell


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_quarter_turn_of_a_2_to_1_frame_keeps_circles_round(mode):
    h, w = 32, 64
    round_blob = blob(h, w, h / 2, w / 2, sigma=4.0)
    turned = warp(round_blob, motion_matrix(1.0, 90.0, 0.0, 0.0), mode, "zeros")
    assert (turned - round_blob).abs().max() < 1e-3  # a sheared warp would make it an ellipse
    off = blob(h, w, h / 2, w / 2 + 8, sigma=2.0)  # 8 cells right of centre
    cx, cy = centroid(warp(off, motion_matrix(1.0, 90.0, 0.0, 0.0), mode, "zeros"))
    assert (cx, cy) == pytest.approx((w / 2, h / 2 - 8), abs=0.05)  # now 8 cells above: same distance


def test_motion_signs_follow_deforum():
    h, w = 32, 32
    dot = blob(h, w, 16, 24)  # right of centre
    x0, y0 = centroid(dot)
    x, y = centroid(warp(dot, motion_matrix(1.0, 0.0, 16.0, 0.0), "bicubic", "zeros"))
    assert x == pytest.approx(x0 + 2, abs=0.02) and y == pytest.approx(y0, abs=0.02)  # +x: content moves right
    x, y = centroid(warp(dot, motion_matrix(1.0, 0.0, 0.0, 16.0), "bicubic", "zeros"))
    assert y == pytest.approx(y0 + 2, abs=0.02)  # +y: content moves down
    x, y = centroid(warp(dot, motion_matrix(1.0, 10.0, 0.0, 0.0), "bicubic", "zeros"))
    assert y < y0 - 1 and x < x0  # +angle: counter-clockwise, a point right of centre rises
    wide = blob(64, 64, 32, 38)  # 6 cells right of centre, far from the edges
    xw0, _ = centroid(wide)
    x, y = centroid(warp(wide, motion_matrix(1.25, 0.0, 0.0, 0.0), "bicubic", "zeros"))
    assert x - 32 == pytest.approx(1.25 * (xw0 - 32), abs=0.02)  # zoom > 1 pushes content outward


def test_motion_matrices_compose():
    z = blob(48, 48, 22, 27, sigma=3.0)
    a, b = motion_matrix(1.05, 30.0, 16.0, -8.0), motion_matrix(0.9, -10.0, 12.0, 20.0)
    twice = warp(warp(z, a, "bicubic", "zeros"), b, "bicubic", "zeros")
    once = warp(z, b @ a, "bicubic", "zeros")
    wrong_order = warp(z, a @ b, "bicubic", "zeros")
    assert (twice - once).abs().max() < 0.03  # equal up to one extra resampling (measured 0.021)
    assert (twice - wrong_order).abs().max() > 0.2


def test_composed_motion_is_the_product_of_the_frames_maps_in_order():
    maps = [motion_matrix(1.0 + 0.01 * n, 0.7 * n, 3.0 - n, 0.5 * n) for n in range(1, 9)]
    point = np.array([37.0, -12.0, 1.0])
    step_by_step = point
    for m in maps:
        step_by_step = m @ step_by_step
    assert np.allclose(compose(maps) @ point, step_by_step, rtol=0, atol=1e-12)
    assert np.array_equal(compose(maps[:1]), maps[0])  # one frame: exactly its own map
    assert not np.allclose(compose(maps[::-1]) @ point, step_by_step)  # order matters
    # not the map of the summed schedule values
    summed = motion_matrix(1.0 + sum(0.01 * n for n in range(1, 9)), sum(0.7 * n for n in range(1, 9)),
                           sum(3.0 - n for n in range(1, 9)), sum(0.5 * n for n in range(1, 9)))
    assert not np.allclose(compose(maps), summed, atol=1e-3)


def test_whole_cell_shifts_compose_exactly():
    z = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(3))
    steps = [motion_matrix(1.0, 0.0, 8.0, 16.0), motion_matrix(1.0, 0.0, 16.0, 8.0)]  # edges replicate alike
    once = warp(z, compose(steps), "bicubic", "border")
    twice = warp(warp(z, steps[0], "bicubic", "border"), steps[1], "bicubic", "border")
    assert torch.equal(once, twice)


def test_motion_between_frames_uses_every_frame_of_the_gap(tmp_path):
    from deforum_ray.frame.loop import FrameSchedules
    from deforum_ray.job.spec import load_job

    spec = load_job(REPO / "jobs/demo.yaml", [f"output.uri={tmp_path}"])
    sched = FrameSchedules.of(spec.clips[0])
    assert np.array_equal(sched.motion_between(4, 5), sched.motion(5))
    assert np.allclose(sched.motion_between(0, 12), sched.motion_between(6, 12) @ sched.motion_between(0, 6), atol=1e-12)
    assert np.allclose(sched.motion_between(3, 3), np.eye(3))


@pytest.mark.parametrize(("frame", "weight"), [(3, 0.0), (4, 0.0), (5, 0.25), (6, 0.5), (7, 0.75), (8, 0.0)])
def test_blend_weight_ramps_over_the_last_frames_before_the_next_anchor(frame, weight):
    from deforum_ray.frame.loop import blend_weight

    assert blend_weight(frame, next_anchor=8, blend=3) == weight
    assert blend_weight(frame, next_anchor=8, blend=0) == 0.0


def test_warp_rejects_unknown_modes():
    z = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="interpolation"):
        warp(z, np.eye(3), "nearest")
    with pytest.raises(ValueError, match="padding"):
        warp(z, np.eye(3), "bilinear", "wrap")


# --- colour coherence ---------------------------------------------------------------------------------------


def test_colour_match_moves_channel_statistics_to_the_reference():
    generator = torch.Generator().manual_seed(0)
    frame = torch.randn(2, 16, 12, 12, generator=generator) * 3 + 1
    reference = torch.randn(2, 16, 12, 12, generator=generator) * 0.5 - 2
    matched = match_channel_stats(frame, reference)
    mean_m, std_m = channel_stats(matched)
    mean_r, std_r = channel_stats(reference)
    assert torch.allclose(mean_m, mean_r, atol=1e-5) and torch.allclose(std_m, std_r, atol=1e-5)
    # the picture's structure is kept: per channel, a positive affine map of the input
    corr = torch.corrcoef(torch.stack([frame[0, 3].flatten(), matched[0, 3].flatten()]))[0, 1]
    assert corr > 0.9999
    assert torch.allclose(match_channel_stats(reference, reference), reference, atol=1e-5)


def test_colour_match_on_rgb_and_flat_channels():
    rgb = torch.rand(1, 3, 8, 8)
    flat = torch.full((1, 3, 8, 8), 0.5)
    out = match_channel_stats(flat, rgb)
    assert torch.isfinite(out).all()
    assert torch.allclose(channel_stats(out)[0], channel_stats(rgb)[0], atol=1e-5)


# --- prompt embeddings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [(0, (0, 0, 0.0)), (5, (0, 1, 0.5)), (10, (1, 1, 0.0)), (15, (1, 2, 0.25)), (30, (2, 2, 0.0)), (99, (2, 2, 0.0))],
)
def test_blend_weights(frame, expected):
    assert blend_weights([0, 10, 30], frame) == pytest.approx(expected)
    assert blend_weights([4], 0) == (0, 0, 0.0)


def test_prompts_encoded_once_and_blended_linearly():
    model = build_tiny(seed=0)
    calls = []
    model.text_encoder_2.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    prompts = {0: "a lighthouse at dusk", 8: "a lighthouse in a storm", 16: "a lighthouse at dusk"}
    embeddings = encode_prompts(model, list(prompts.values()))
    assert calls == [2] and set(embeddings) == set(prompts.values())  # two distinct prompts, one batch
    a, b = embeddings[prompts[0]], embeddings[prompts[8]]
    mid = embedding_at(prompts, embeddings, 2)
    assert torch.allclose(mid.tokens, 0.75 * a.tokens + 0.25 * b.tokens, atol=1e-6)
    assert torch.allclose(mid.pooled, 0.75 * a.pooled + 0.25 * b.pooled, atol=1e-6)
    assert embedding_at(prompts, embeddings, 8) is b and embedding_at(prompts, embeddings, 20) is a
    steps = [float((embedding_at(prompts, embeddings, f).pooled - embedding_at(prompts, embeddings, f + 1).pooled).norm())
             for f in range(0, 8)]
    assert max(steps) == pytest.approx(min(steps), rel=1e-4)  # no hard cut: equal steps to the keyframe
    assert not torch.allclose(a.pooled, b.pooled)
