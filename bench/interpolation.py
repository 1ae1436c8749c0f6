"""Which frame interpolation is best: hold frames out, interpolate them back, compare to the truth.

    python bench/interpolation.py [--frames 33]

Two sequences, both 128x128: (1) a clip of jobs/demo.yaml rendered by the tiny model on the CPU
(through the real worker code, no Ray); (2) a camera move over a procedural picture with sharp edges
(zoom, turn and pan, the motion Deforum makes), where every true in-between is known exactly.
For k = 2 and 4, every k-th frame is kept, the rest are interpolated back with each method of
`post.interpolation_method`, and the mean absolute error (0-255) and PSNR against the held-out
frames are printed, with the time each method took. ``latent`` (slerp of the stored float16
latents, decoded by the VAE) needs latents, so it runs on the rendered clip only.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np
import torch

from deforum_ray.post.finalize import blend, minterpolate, slerped
from deforum_ray.model.vae import decode
from deforum_ray.frame.motion import motion_matrix, warp
from deforum_ray.job.spec import load_job
from deforum_ray.render.local import render_local
from deforum_ray.render.worker import FluxWorker

METHODS = {"blend": lambda frames, k, fps: blend(frames, k),
           "ffmpeg": lambda frames, k, fps: minterpolate(frames, k, len(frames), fps)}


def rendered_clip(frames: int) -> tuple[list[np.ndarray], list[torch.Tensor], FluxWorker]:
    spec = load_job("jobs/demo.yaml", [f"clips.0.num_frames={frames}", "clips.1.num_frames=2", "noise_mode=slerp"])
    worker = FluxWorker(spec.model, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        latents = render_local(worker, spec, "lighthouse", out)
    ordered = [latents[n].to(torch.float16).float() for n in range(frames)]  # as stored
    return [decode(worker.model, latents[n]) for n in range(frames)], ordered, worker


def camera_move(frames: int, size: int = 128) -> list[np.ndarray]:
    """A picture with smooth shading and sharp edges under a steady zoom, turn and pan (4 px a
    frame): the exact frames, warped in float64."""
    y, x = np.mgrid[0:size, 0:size] / size
    edges = np.sign(np.sin(23 * x) * np.sin(19 * y))  # sharp edges, where blending shows ghosts
    picture = np.stack([np.sin(7 * x + 3 * y) + 0.8 * edges, np.sin(5 * y) * np.cos(9 * x) - 0.6 * edges,
                        np.cos(6 * (x - y)) + 0.5 * np.sin(17 * x)], axis=0)
    base = torch.from_numpy(picture)[None]
    out = []
    for n in range(frames):
        m = motion_matrix(1.02 ** n, 1.5 * n, 4.0 * n, -2.0 * n)
        z = warp(base, m, "bicubic", "reflection", vae_scale=1)  # pixel units: vae_scale 1
        rgb = ((z[0].permute(1, 2, 0).numpy() + 2.5) / 5 * 255).clip(0, 255).round().astype(np.uint8)
        out.append(rgb)
    return out


def score(truth: list[np.ndarray], k: int, method: str, fps: float, latents=None, worker=None) -> tuple[float, float, float]:
    kept = truth[:: k][: (len(truth) - 1) // k + 1]
    started = time.perf_counter()
    if method == "latent":
        guessed = list(slerped(kept, latents[:: k][: len(kept)], k, worker.decode))
    else:
        guessed = list(METHODS[method](kept, k, fps))
    seconds = time.perf_counter() - started
    assert len(guessed) == (len(kept) - 1) * k + 1
    held_out = [i for i in range(len(guessed)) if i % k]
    errors = [np.abs(guessed[i].astype(np.float64) - truth[i]).mean() for i in held_out]
    mse = np.mean([((guessed[i].astype(np.float64) - truth[i]) ** 2).mean() for i in held_out])
    return float(np.mean(errors)), 10 * math.log10(255**2 / mse), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=33)
    args = parser.parse_args()
    frames, latents, worker = rendered_clip(args.frames)
    sequences = {"tiny render (demo clip, slerp noise)": (frames, latents),
                 "camera move (zoom, turn, 4 px pan)": (camera_move(args.frames), None)}
    print(f"{'sequence':38} {'k':>2} {'method':8} {'MAE':>7} {'PSNR dB':>8} {'seconds':>8}")
    for name, (truth, stored) in sequences.items():
        for k in (2, 4):
            for method in [*METHODS, "latent"] if stored else list(METHODS):
                mae, psnr, seconds = score(truth, k, method, 12.0, stored, worker)
                print(f"{name:38} {k:2d} {method:8} {mae:7.2f} {psnr:8.2f} {seconds:8.2f}")


if __name__ == "__main__":
    main()
