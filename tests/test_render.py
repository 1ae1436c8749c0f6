"""The frame loop and real renders with the tiny model: determinism, locality, init images,
the CLI and the seed-style Python API, checked on the decoded video."""

from __future__ import annotations

import json
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load, save

from conftest import REPO
from deforum_ray import create_flux1_pipeline
from deforum_ray.render.driver import render
from deforum_ray.frame.loop import Chain, LoopState, run_chain
from deforum_ray.model.vae import decode, encode
from deforum_ray.model.loading import build_tiny
from deforum_ray.job.plan import frame_passes, plan
from deforum_ray.frame.prompts import encode_prompts
from deforum_ray.job.spec import load_job
from deforum_ray.store import RenderStore


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=0)


def job(tmp_path: Path, **top) -> dict:
    spec = {
        "name": "t", "model": "tiny", "width": 64, "height": 48, "seed": 3,
        "motion": {"zoom": "0:(1.02)", "angle": "0:(1)", "translation_x": "0:(2)"},
        "clips": [
            {"name": "a", "num_frames": 8, "prompts": {0: "a red fox", 3: "a blue fox", 6: "a green hill"}},
            {"name": "b", "num_frames": 5, "prompts": {0: "a quiet harbour at night"}},
        ],
        "output": {"uri": str(tmp_path)},
    }
    spec.update(top)
    return spec


def frames_of(result_dir: str, spec) -> dict[tuple[str, int], bytes]:
    store = RenderStore(result_dir)
    return {(c.name, n): store.get(store.frame_rel(c.name, 0, n)) for c in spec.clips for n in range(c.num_frames)}


def decoded_frame_count(path: str) -> int:
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    count = sum(1 for _ in reader)
    assert meta["size"][0] > 0
    return count


def test_same_spec_twice_gives_byte_identical_frames(tmp_path, tiny, tiny_pool):
    spec = load_job(job(tmp_path / "one"))
    first = render(spec, pool=tiny_pool, progress=False)
    again = render(load_job(job(tmp_path / "two")), pool=tiny_pool, progress=False)
    a, b = frames_of(first.output_dir, spec), frames_of(again.output_dir, spec)
    assert len(a) == 13 and a == b
    assert decoded_frame_count(first.video) == 13
    assert Path(first.video).read_bytes() == Path(again.video).read_bytes()


def test_changing_only_the_seed_changes_the_frames(tmp_path, tiny, tiny_pool):
    spec = load_job(job(tmp_path / "one"))
    base = frames_of(render(spec, pool=tiny_pool, progress=False).output_dir, spec)
    other = frames_of(render(load_job(job(tmp_path / "two", seed=4)), pool=tiny_pool, progress=False).output_dir, spec)
    assert all(base[key] != other[key] for key in base)


def test_changing_a_prompt_keyframe_changes_only_the_frames_it_influences(tmp_path, tiny, tiny_pool):
    spec = load_job(job(tmp_path / "one"))
    base = frames_of(render(spec, pool=tiny_pool, progress=False).output_dir, spec)
    changed_job = job(tmp_path / "two")
    changed_job["clips"][0]["prompts"][6] = "a snowy mountain"
    changed = frames_of(render(load_job(changed_job), pool=tiny_pool, progress=False).output_dir, spec)
    # frames 0-3 of clip a never see the key at 6 (frame 3 is exactly "a blue fox"); 4+ blend toward it
    # and every later frame follows from its predecessor; clip b is another chain.
    assert [base[("a", n)] == changed[("a", n)] for n in range(8)] == [True] * 4 + [False] * 4
    assert all(base[("b", n)] == changed[("b", n)] for n in range(5))


def test_init_image_is_honoured(tmp_path, tiny, tiny_pool):
    y, x = np.mgrid[0:48, 0:64]
    picture = np.stack([x * 4, y * 5, 255 - x * 4], axis=-1).clip(0, 255).astype(np.uint8)
    init = tmp_path / "init.png"
    Image.fromarray(picture).save(init)
    with_init = job(tmp_path / "with", strength=0.5)
    with_init["clips"][0]["init_image"] = str(init)
    spec = load_job(with_init)
    first_with = RenderStore(render(spec, pool=tiny_pool, progress=False).output_dir).read_frame("a", 0, 0)
    first_without = RenderStore(render(load_job(job(tmp_path / "without")), pool=tiny_pool, progress=False).output_dir
                                ).read_frame("a", 0, 0)
    # tiny's VAE has random weights: the picture it can show is decode(encode(init)), which a trained
    # VAE makes the init image itself. Resemblance is measured against that.
    as_seen = decode(tiny, encode(tiny, picture)).astype(np.float64)
    error = lambda frame: float(np.mean((frame.astype(np.float64) - as_seen) ** 2))  # noqa: E731
    assert error(first_with) < 0.5 * error(first_without)


def test_transformer_passes_per_frame_follow_the_plan(tmp_path, tiny):
    spec = load_job(job(tmp_path, strength="0:(0.5), 3:(1.0), 5:(0.3)"))
    clip = spec.clips[0]
    calls: list[int] = []
    hook = tiny.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        chain = Chain(tiny, clip, spec.width, spec.height, encode_prompts(tiny, list(clip.prompts.values())))
        per_frame = []
        counted = 0

        def count(n, z, state):
            nonlocal counted
            per_frame.append(len(calls) - counted)
            counted = len(calls)

        run_chain(chain, LoopState(), clip.num_frames, count)
    finally:
        hook.remove()
    assert per_frame == frame_passes(clip)
    assert per_frame[:4] == [4, 3, 3, 4]  # frame 0 from noise; then round(4 * (1 - s)) skipped


def test_the_loop_calls_the_model_only_through_its_denoiser(tmp_path, tiny, monkeypatch):
    """The seam Step 10 wraps (compile, fp8, graphs): swap the model's denoiser and every
    transformer pass of the loop goes through the replacement, batch by batch."""
    spec = load_job(job(tmp_path, strength="0:(0.5), 3:(1.0), 5:(0.3)"))
    clip = spec.clips[0]
    embeddings = encode_prompts(tiny, list(clip.prompts.values()))
    assert tiny.denoiser is tiny.denoiser  # built once per model
    plain: list[torch.Tensor] = []
    run_chain(Chain(tiny, clip, spec.width, spec.height, embeddings), LoopState(), clip.num_frames,
              lambda n, z, s: plain.append(z))

    real = tiny.denoiser
    batches: list[int] = []

    class Wrapped:
        device, dtype = real.device, real.dtype

        def velocity(self, x, t, text, img_ids, guidance=None):
            batches.append(x.shape[0])
            return real.velocity(x, t, text, img_ids, guidance)

    monkeypatch.setattr(tiny, "denoiser", Wrapped())
    wrapped: list[torch.Tensor] = []
    run_chain(Chain(tiny, clip, spec.width, spec.height, embeddings), LoopState(), clip.num_frames,
              lambda n, z, s: wrapped.append(z))
    assert batches == [1] * sum(frame_passes(clip))
    assert all(torch.equal(a, b) for a, b in zip(plain, wrapped)) and len(wrapped) == clip.num_frames


def test_loop_state_checkpoint_resumes_bit_exactly(tmp_path, tiny):
    spec = load_job(job(tmp_path, noise_mode="slerp", color_coherence="match_first"))
    clip = spec.clips[0]
    embeddings = encode_prompts(tiny, list(clip.prompts.values()))
    straight: list[np.ndarray] = []
    run_chain(Chain(tiny, clip, spec.width, spec.height, embeddings), LoopState(), 8,
              lambda n, z, s: straight.append(decode(tiny, z)))
    resumed: list[np.ndarray] = []
    chain = Chain(tiny, clip, spec.width, spec.height, embeddings)
    state = run_chain(chain, LoopState(), 4, lambda n, z, s: resumed.append(decode(tiny, z)))
    restored = LoopState.from_tensors(load(save(state.tensors())))  # through safetensors bytes
    assert restored.frame == 4
    run_chain(Chain(tiny, clip, spec.width, spec.height, embeddings), restored, 8,
              lambda n, z, s: resumed.append(decode(tiny, z)))
    assert all(np.array_equal(a, b) for a, b in zip(straight, resumed)) and len(resumed) == 8


def test_the_state_after_a_first_frame_saves_though_its_colour_reference_is_its_latent(tmp_path, tiny):
    """After frame 0 with ``match_first`` the colour reference is the latent itself (an anchor
    chain stores exactly that state); safetensors refuses tensors that share memory."""
    spec = load_job(job(tmp_path, color_coherence="match_first"))
    clip = spec.clips[0]
    chain = Chain(tiny, clip, spec.width, spec.height, encode_prompts(tiny, list(clip.prompts.values())))
    state = run_chain(chain, LoopState(), 1, lambda n, z, s: None)
    assert state.color_ref is state.latent
    restored = LoopState.from_tensors(load(save(state.tensors())))
    assert torch.equal(restored.latent, state.latent) and torch.equal(restored.color_ref, state.color_ref)


@pytest.mark.parametrize("mode", ["match_first", "match_frame"])
def test_colour_coherence_applies_to_the_carried_latent(tmp_path, tiny, mode):
    spec = load_job(job(tmp_path, color_coherence=mode, strength=0.75))
    clip = spec.clips[0]
    chain = Chain(tiny, clip, spec.width, spec.height, encode_prompts(tiny, list(clip.prompts.values())))
    latents = []

    def check(n, z, state):
        latents.append(z)
        assert torch.equal(state.latent, z)  # the matched latent is what the next frame warps

    run_chain(chain, LoopState(), 4, check)
    reference = latents[0] if mode == "match_first" else latents[2]
    mean = lambda z: z.mean(dim=(2, 3))  # noqa: E731
    std = lambda z: z.std(dim=(2, 3), unbiased=False)  # noqa: E731
    assert torch.allclose(mean(latents[3]), mean(reference), atol=1e-4)
    assert torch.allclose(std(latents[3]), std(reference), atol=1e-4)


@pytest.mark.parametrize("method", ["ffmpeg", "blend", "latent"])
def test_post_interpolation_and_loop_frame_counts(tmp_path, tiny, tiny_pool, method):
    spec = load_job(job(tmp_path, post={"interpolation": 2, "loop": True, "interpolation_method": method}))
    result = render(spec, pool=tiny_pool, progress=False)
    a, b = (8 - 1) * 2 + 1, (5 - 1) * 2 + 1  # interpolated, then each clip looped: 2m - 2
    assert plan(spec).video_frames == (2 * a - 2) + (2 * b - 2) == result.final.frames
    assert decoded_frame_count(result.video) == (2 * a - 2) + (2 * b - 2)


def test_final_stage_errors_come_back_from_its_ray_task_as_one_line(tmp_path, tiny, tiny_pool):
    from deforum_ray.post.finalize import FinalizeError

    first = render(load_job(job(tmp_path, post={"interpolation": 2, "interpolation_method": "latent"})),
                   pool=tiny_pool, progress=False)
    before = Path(first.video).read_bytes()
    store = RenderStore(first.output_dir)
    latent = Path(store.path(store.latent_rel("b", 0, 2)))
    data = bytearray(latent.read_bytes())
    data[-1] ^= 0x55  # same size: the chain still counts as done, only reading the latent tells
    latent.write_bytes(bytes(data))
    changed = load_job(job(tmp_path, post={"interpolation": 4, "interpolation_method": "latent"}))
    with pytest.raises(FinalizeError, match=r"^clip 'b': latent 2 is missing or corrupt"):
        render(changed, pool=tiny_pool, progress=False)
    assert Path(first.video).read_bytes() == before  # the failed stage left the last video alone


def test_cli_render_prints_the_video_path_last(tmp_path, ray_cluster, capsys):
    """``deforum-ray render`` in this process on the session's Ray (the console script itself is
    run by test_cli.py, test_crash.py and the ``ray job submit`` test)."""
    from deforum_ray.cli import main

    out = tmp_path / "renders"
    args = ["render", str(REPO / "jobs" / "demo.yaml"), f"output.uri={out}", "clips.0.num_frames=13",
            "clips.1.num_frames=4", "cluster.num_workers=1"]
    capsys.readouterr()
    code = main([*args, "--no-progress"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    video = stdout.strip().splitlines()[-1]
    assert video.endswith("/demo.mp4") and Path(video).is_file() and str(out) in video
    assert decoded_frame_count(video) == 17
    folder = Path(video).parent
    assert (folder / "spec.yaml").is_file() and (folder / "manifest.json").is_file()
    assert len(list((folder / "segments" / "lighthouse" / "0" / "frames").glob("*.png"))) == 13
    assert decoded_frame_count(str(folder / "demo-lighthouse.mp4")) == 13  # each clip's own video too
    assert decoded_frame_count(str(folder / "demo-harbour.mp4")) == 4
    for clip in ("lighthouse", "harbour"):
        with Image.open(folder / f"demo-{clip}-sheet.png") as sheet:
            assert sheet.format == "PNG" and sheet.size[0] > 128
    # The start is kept with the job, phase by phase, and shown on its page and by status --json.
    (start,) = RenderStore(str(folder)).starts()
    assert [p["phase"] for p in start["phases"]] == ["ray", "workers", "embed", "place", "first frame"]
    assert all(0 <= p["seconds"] for p in start["phases"])
    assert sum(p["seconds"] for p in start["phases"]) <= start["seconds"] + 0.01
    (worker,) = start["workers"]
    assert worker["load_s"] > 0 and worker["compile_cache"] is None and worker["worker"]
    assert "<h2>Start</h2>" in (folder / "report.html").read_text()
    code = main(["status", str(folder), "--json"])
    assert code == 0 and json.loads(capsys.readouterr()[0])["jobs"][0]["starts"] == [start]
    stamp = Path(video).stat().st_mtime_ns
    code = main(args)
    stdout, stderr = capsys.readouterr()
    assert code == 0 and stdout.strip().splitlines()[-1] == video
    assert "already made, nothing changed" in stderr and Path(video).stat().st_mtime_ns == stamp
    assert len(RenderStore(str(folder)).starts()) == 1  # nothing rendered: no start


def test_cli_render_failure_is_one_line_exit_1(tmp_path, ray_cluster, capsys):
    from deforum_ray.cli import main

    empty_model = tmp_path / "empty-model"
    empty_model.mkdir()
    code = main(["render", str(REPO / "jobs" / "demo.yaml"), f"output.uri={tmp_path / 'renders'}",
                 f"model.source={empty_model}", "cluster.num_workers=1", "--no-progress"])  # on the session's Ray
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("deforum-ray: render failed: model: cannot load transformer from folder")
    assert "Traceback" not in err


def test_seed_quick_start_api_on_the_cpu(tmp_path, ray_cluster):
    pipe = create_flux1_pipeline(device="cpu", offload=False, schnell=True, model="tiny")
    seen = []
    path = pipe.generate_animation(
        prompts={0: "cat eating sushi, anime style"},
        motion_params={"zoom": "0:(1.0), 60:(1.1)"},
        num_frames=6, width=64, height=64,
        strength=0.5, noise_scale=1.0, num_inference_steps=4, guidance_scale=0.0,
        seed=42, output_path=str(tmp_path / "animation.mp4"),
        callback=lambda i, total, latent: seen.append((i, total, tuple(latent.shape))),
    )
    assert path == str(tmp_path / "animation.mp4") and Path(path).is_file()
    assert decoded_frame_count(path) == 6
    assert seen == [(i, 6, (1, 16, 8, 8)) for i in range(6)]
    # the model stays resident: a second call reuses the same worker
    worker = pipe._pool.workers[0]
    pipe.generate_animation(prompts="a lighthouse", motion_params={}, num_frames=3, width=64, height=64,
                            num_inference_steps=4, seed=1, output_path=str(tmp_path / "second.mp4"))
    assert pipe._pool.workers[0] is worker and decoded_frame_count(str(tmp_path / "second.mp4")) == 3
    pipe.close()


def test_api_bad_argument_is_a_named_spec_error(tmp_path):
    from deforum_ray.job.spec import SpecError

    pipe = create_flux1_pipeline(device="cpu", model="tiny")
    with pytest.raises(SpecError, match=r"motion\.translation_w: unknown key"):
        pipe.generate_animation(prompts="x", motion_params={"translation_w": "0:(1)"}, num_frames=2, width=64,
                                height=64, output_path=str(tmp_path / "x.mp4"))
    with pytest.raises(SpecError, match=r"motion\.translation_z: moves only in motion\.mode 3d; clip 'x' is 2d"):
        pipe.generate_animation(prompts="x", motion_params={"translation_z": "0:(1)"}, num_frames=2, width=64,
                                height=64, output_path=str(tmp_path / "x.mp4"))
    with pytest.raises(SpecError, match="strength: must be"):
        pipe.generate_animation(prompts="x", motion_params={}, strength=1.5, num_frames=2, width=64, height=64,
                                output_path=str(tmp_path / "x.mp4"))
    assert not list(tmp_path.iterdir())


def test_api_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible; pass device='cpu'"):
        create_flux1_pipeline(schnell=True)
