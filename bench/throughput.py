"""Frames/s of `deforum-ray render` on one GPU beside diffusers' img2img pipeline, in one run.

    python bench/throughput.py --out results.json [--sizes 512 1024] [--variants eager,k4,...]

FLUX.1-schnell-sized random weights (``random:flux1-schnell``: 19 + 38 blocks, FLUX's VAE, text
encoders of FLUX's widths with tiny tokenizers) built on the GPU, no download. 4 steps,
strength 0.5, ``color_coherence: match_first``, a slow zoom.

(a) diffusers ``FluxImg2ImgPipeline`` called once per frame on the same weights, each frame's
    picture warped and fed back, as a frame-by-frame renderer built on it would;
(b) the same with ``enable_model_cpu_offload`` (what the seed did), a few frames, when
    ``accelerate`` is installed;
(c) ``deforum-ray render`` (a process of its own: driver, embedded Ray, a worker, the store,
    the final stage) for each variant. Its figure is frames over the span of the run log, so
    store writes count; the first frame (model warm-up, compiling) is reported apart.

The table gives ms/frame, frames/s, the ratio to (a), the transformer's TFLOP/s and its share of
the bf16 matmul rate measured in the same run, the GPU's peak memory (nvidia-smi: every process)
and the worker's own peak (torch's reserved memory, from the run log). Variants ``-c2``, ``-c4``
render at diffusion cadence 2 and 4; every row also gives the frames diffused and the flicker of
clip c0 (``bench/cadence.py``: the latent change the camera does not explain, mean and spread).
Variants ``-3d`` move a 3d camera by the same zoom as a plane (``depth: none``), ``-3d-depth``
over the depth a Depth Anything V2 Small-sized model (random weights, ``bench/depth.py``) sees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforum_ray.model.loading import build_random  # noqa: E402
from deforum_ray.store import RenderStore  # noqa: E402
from cadence import flicker, run_log_rate  # noqa: E402  (bench/cadence.py)

STEPS, STRENGTH = 4, 0.5
PASSES = round(STEPS * STRENGTH)  # transformer passes per frame after the first

FULL_ENCODERS = "random:flux1-schnell-full-encoders"  # T5-XXL- and CLIP-L-sized: memory as with real weights

# name -> (chains per worker, cluster overrides, model source or None for random:flux1-schnell)
VARIANTS = {
    "eager": (1, {}, None),
    "eager-sync": (1, {"write_queue": 0}, None),
    "compiled": (1, {"compile": True}, None),
    "compiled-warm": (1, {"compile": True}, None),  # the same cache folder again: a warm start
    "k4-eager": (4, {}, None),
    "k4-compiled": (4, {"compile": True}, None),
    "k4-eager-full-encoders": (4, {}, FULL_ENCODERS),
    "k4-compiled-full-encoders": (4, {"compile": True}, FULL_ENCODERS),
    "k4-fp8-eager-full-encoders": (4, {"precision": "fp8"}, FULL_ENCODERS),
    "k4-fp8-compiled-full-encoders": (4, {"precision": "fp8", "compile": True}, FULL_ENCODERS),
    "k4-fp8-compiled": (4, {"precision": "fp8", "compile": True}, None),
    # the whole model compiled as one (before Step 18); the variants above compile block by block
    "k4-compiled-model": (4, {"compile": True, "compile_scope": "model"}, None),
    "k4-fp8-compiled-model": (4, {"precision": "fp8", "compile": True, "compile_scope": "model"}, None),
    "k4-compiled-cudagraphs": (4, {"compile": True, "compile_mode": "reduce-overhead"}, None),
    "compiled-c2": (1, {"compile": True, "cadence": 2}, None),  # diffusion cadence (a render setting)
    "compiled-c4": (1, {"compile": True, "cadence": 4}, None),
    "k4-compiled-c2": (4, {"compile": True, "cadence": 2}, None),
    "k4-compiled-c4": (4, {"compile": True, "cadence": 4}, None),
    "compiled-3d": (1, {"compile": True, "camera": "none"}, None),  # motion.mode 3d, a plane
    "compiled-3d-depth": (1, {"compile": True, "camera": "depth"}, None),  # ... with a depth model
    "k4-compiled-3d": (4, {"compile": True, "camera": "none"}, None),
    "k4-compiled-3d-depth": (4, {"compile": True, "camera": "depth"}, None),
    "k4-compiled-c4-3d-depth": (4, {"compile": True, "cadence": 4, "camera": "depth"}, None),
    "k4-fp8-compiled-cudagraphs-full-encoders": (4, {"precision": "fp8", "compile": True,
                                                     "compile_mode": "reduce-overhead"}, FULL_ENCODERS),
}
# "<variant>-warm": the variant again on the same compile cache folder, a worker's second start.
BF16_TWIN = {"k4-fp8-eager-full-encoders": "k4-eager-full-encoders",
             "k4-fp8-compiled-full-encoders": "k4-compiled-full-encoders", "k4-fp8-compiled": "k4-compiled",
             "k4-fp8-compiled-cudagraphs-full-encoders": "k4-compiled-full-encoders"}


class PeakMemory:
    """The GPU's peak used memory while a block runs, from nvidia-smi (any process's)."""

    def __enter__(self) -> "PeakMemory":
        self.peak, self.stop = 0, threading.Event()

        def poll() -> None:
            while not self.stop.is_set():
                try:
                    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, timeout=10).stdout
                    self.peak = max(self.peak, int(out.split()[0]))
                except Exception:
                    pass
                self.stop.wait(0.2)

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def gib(self) -> float:
        return self.peak / 1024


def matmul_rate() -> float:
    """bf16 matmul TFLOP/s on this GPU, measured (8192^3)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - start) / 1e12


def transformer_flops(model, size: int) -> float:
    """FLOPs of one transformer pass at batch 1 (torch's flop counter over a real forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    from deforum_ray.frame.sampling import latent_image_ids

    cells = size // 8
    x = torch.randn(1, (cells // 2) ** 2, 64, device="cuda", dtype=model.dtype)
    tokens = torch.randn(1, model.max_text_length, 4096, device="cuda", dtype=model.dtype)
    pooled = torch.randn(1, 768, device="cuda", dtype=model.dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.transformer(hidden_states=x, encoder_hidden_states=tokens, pooled_projections=pooled,
                          timestep=torch.ones(1, device="cuda", dtype=model.dtype),
                          img_ids=latent_image_ids(cells, cells, "cuda", model.dtype),
                          txt_ids=torch.zeros(model.max_text_length, 3, device="cuda", dtype=model.dtype),
                          return_dict=False)
    return float(counter.get_total_flops())


def diffusers_loop(model, size: int, frames: int, offload: bool = False) -> float:
    """ms/frame of FluxImg2ImgPipeline once per frame, feeding back a zoomed picture."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline
    from PIL import Image

    pipe = FluxImg2ImgPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=model.vae,
                               text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                               text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
                               transformer=model.transformer)
    pipe.set_progress_bar_config(disable=True)
    if offload:
        pipe.enable_model_cpu_offload()
    image = Image.fromarray(np.full((size, size, 3), 127, np.uint8))

    def frame(picture):
        zoomed = picture.resize((int(size * 1.02), int(size * 1.02)), Image.BICUBIC)
        left = (zoomed.width - size) // 2
        warped = zoomed.crop((left, left, left + size, left + size))
        return pipe(prompt="a lighthouse at dusk", image=warped, strength=STRENGTH, num_inference_steps=STEPS,
                    guidance_scale=0.0, height=size, width=size, max_sequence_length=model.max_text_length,
                    generator=torch.Generator().manual_seed(0)).images[0]

    image = frame(image)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(frames):
        image = frame(image)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / frames


def render_job(size: int, chains: int, frames: int, cluster: dict, out: Path, source: str | None = None) -> dict:
    cluster = dict(cluster)
    model = {"preset": "flux1-schnell-random", "precision": cluster.pop("precision", "bf16"),
             "source": source or "random:flux1-schnell"}
    motion: dict = {"zoom": "0:(1.02)", "angle": "0:(0.3)"}
    camera = cluster.pop("camera", None)
    if camera is not None:  # the same zoom and turn: translation_z 200 (1 - 1/1.02)
        motion = {"mode": "3d", "translation_z": "0:(3.92)", "rotation_3d_z": "0:(0.3)", "rotation_3d_y": "0:(0.2)",
                  "depth": str(depth_folder(out.parent)) if camera == "depth" else "none"}
    return {
        "name": "bench", "model": model, "width": size, "height": size, "seed": 1, "cadence": cluster.pop("cadence", 1),
        "strength": STRENGTH, "steps": STEPS, "color_coherence": "match_first",
        "motion": motion,
        "clips": [{"name": f"c{i}", "num_frames": frames, "prompts": {0: "a lighthouse at dusk"}} for i in range(chains)],
        "output": {"uri": str(out)},
        "cluster": {"num_workers": 1, "chains_per_worker": chains, **cluster},
    }


def depth_folder(work: Path) -> Path:
    """Depth Anything V2 Small-sized random weights, saved once under ``work``."""
    from depth import small_sized  # bench/depth.py

    folder = work / "depth-small-sized"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        small_sized().save_pretrained(folder)
    return folder


def variant_settings(variant: str) -> tuple[int, dict, str | None]:
    return VARIANTS[variant.removesuffix("-warm")]


def render(size: int, variant: str, frames: int, work: Path, cache: Path) -> dict:
    chains, cluster, source = variant_settings(variant)
    cluster = dict(cluster)
    if cluster.get("compile"):  # each variant cold in a folder of its own; "-warm" finds its variant's
        cluster["compile_cache"] = str(cache / variant.removesuffix("-warm") / f"{size}")
    out = work / f"{variant}-{size}"
    job = work / f"{variant}-{size}.yaml"
    job.write_text(yaml.safe_dump(render_job(size, chains, frames, cluster, out, source)))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    started, started_at = time.perf_counter(), time.time()
    with PeakMemory() as memory:
        result = subprocess.run([sys.executable, "-m", "deforum_ray", "render", str(job), "--no-progress"],
                                capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return {"variant": variant, "size": size, "error": result.stderr.strip().splitlines()[-3:]}
    (job_dir,) = [p for p in out.iterdir() if p.is_dir()]
    psnr = None
    twin_variant = BF16_TWIN.get(variant.removesuffix("-warm"))
    if twin_variant and (work / f"{twin_variant}-{size}").exists():
        (twin,) = [p for p in (work / f"{twin_variant}-{size}").iterdir() if p.is_dir()]
        psnr = mean_psnr(job_dir, twin)
    rows = [r for r in RenderStore(str(job_dir)).read_runlog() if r["segment"] >= 0]
    first = min(rows, key=lambda r: r["timestamp"])
    rate = run_log_rate(job_dir)  # frames, diffused, fps
    return {"variant": variant, "size": size, "chains": chains, **rate, **flicker(job_dir),
            "ms_per_frame": 1000 / rate["fps"], "first_frame_s": first["seconds"], "wall_s": wall,
            # the command's start to its first frame written: Ray, model load, embedding, placing, compiling
            "start_to_first_frame_s": first["timestamp"] - started_at,
            "peak_gib": memory.gib,
            "worker_peak_gib": max((r.get("gpu_peak_gib") or 0.0) for r in rows), "psnr_to_bf16": psnr}


def mean_psnr(job_dir: Path, twin: Path) -> float:
    """Mean PSNR (dB) of one chain's frames (clip c0, up to 24) against the same render in bf16."""
    from PIL import Image

    values = []
    for png in sorted(job_dir.glob("segments/c0/0/frames/*.png"))[:24]:
        a = np.asarray(Image.open(png), dtype=np.float64)
        b = np.asarray(Image.open(twin / png.relative_to(job_dir)), dtype=np.float64)
        mse = float(((a - b) ** 2).mean())
        values.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--variants", default="eager,eager-sync,k4-eager")
    parser.add_argument("--frames", type=int, default=40, help="frames of a one-chain render")
    parser.add_argument("--k4-frames", type=int, default=24, help="frames of each chain of a 4-chain render")
    parser.add_argument("--baseline-frames", type=int, default=12)
    parser.add_argument("--offload-frames", type=int, default=0, help="(b), when accelerate is installed")
    parser.add_argument("--work", default=None, help="folder for renders and the compile cache")
    parser.add_argument("--out", default="throughput.json")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)

    facts = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": STEPS, "strength": STRENGTH}
    model = build_random("flux1-schnell", device="cuda")
    facts["matmul_tflops"] = matmul_rate()
    results: list[dict] = []
    for size in args.sizes:
        flops = transformer_flops(model, size)
        facts[f"tflop_per_pass_{size}"] = flops / 1e12
        base = diffusers_loop(model, size, args.baseline_frames)
        results.append({"variant": "(a) diffusers img2img", "size": size, "chains": 1, "ms_per_frame": base,
                        "fps": 1000 / base})
        if args.offload_frames:
            try:
                import accelerate  # noqa: F401
            except ImportError:
                pass
            else:
                off = diffusers_loop(model, size, args.offload_frames, offload=True)
                results.append({"variant": "(b) diffusers + cpu offload", "size": size, "chains": 1,
                                "ms_per_frame": off, "fps": 1000 / off})
                model.transformer.to("cuda"), model.vae.to("cuda")
        print(json.dumps(results[-1]), flush=True)
    del model
    import gc

    gc.collect()
    torch.cuda.empty_cache()

    for size in args.sizes:
        for variant in args.variants.split(","):
            frames = args.frames if variant_settings(variant)[0] == 1 else args.k4_frames
            row = render(size, variant, frames, work, work / "compile-cache")
            results.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps({"facts": facts, "results": results}, indent=2))
    for row in results:
        if "fps" in row:
            base = next(r for r in results if r["size"] == row["size"] and r["variant"].startswith("(a)"))
            row["ratio"] = row["fps"] / base["fps"]
            diffused_share = row.get("diffused", row.get("frames", 1)) / row.get("frames", 1)  # cadence: fewer passes
            tflops = facts[f"tflop_per_pass_{row['size']}"] * PASSES * row["fps"] * diffused_share
            row["transformer_tflops"] = tflops
            row["matmul_share"] = tflops / facts["matmul_tflops"]
    Path(args.out).write_text(json.dumps({"facts": facts, "results": results}, indent=2))
    print(f"\n{facts['gpu']}, torch {facts['torch']}, bf16 matmul {facts['matmul_tflops']:.0f} TFLOP/s")
    print(f"{'size':>5} {'variant':<28} {'ms/frame':>9} {'frames/s':>9} {'ratio':>6} {'TFLOP/s':>8} {'share':>6} "
          f"{'1st s':>6} {'start s':>7} {'peak GiB':>8} {'worker':>6} {'PSNR':>5} {'diffused':>8} {'flicker':>7} "
          f"{'spread':>6}")
    for row in results:
        if "fps" not in row:
            print(f"{row['size']:>5} {row['variant']:<28} failed: {row.get('error')}")
            continue
        print(f"{row['size']:>5} {row['variant']:<28} {row['ms_per_frame']:9.1f} {row['fps']:9.2f} {row['ratio']:6.2f} "
              f"{row['transformer_tflops']:8.0f} {row['matmul_share']:6.1%} {row.get('first_frame_s', 0):6.1f} "
              f"{row.get('start_to_first_frame_s', 0):7.1f} "
              f"{row.get('peak_gib', 0):8.1f} {row.get('worker_peak_gib', 0):6.1f} {row.get('psnr_to_bf16') or 0:5.1f} "
              f"{row.get('diffused', 0):8d} {row.get('flicker_mean', 0):7.4f} {row.get('flicker_std', 0):6.4f}")


if __name__ == "__main__":
    main()
