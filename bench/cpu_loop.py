"""Frames/s of the latent loop on the CPU with the tiny model, beside the diffusers baseline.

    python bench/cpu_loop.py [--frames 48] [--size 128] [--baseline-frames 12]

Ours: the sequential latent loop (warp, noise, 2 of 4 steps at strength 0.5, decode), frames
written nowhere, so the figure is the loop itself. Baseline: diffusers' FluxImg2ImgPipeline
called once per frame on the same weights, feeding back each frame's picture (warped in pixel
space), as a frame-by-frame renderer built on it would: it re-encodes prompts and frames.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deforum_ray.frame.loop import Chain, LoopState, run_chain
from deforum_ray.frame.prompts import encode_prompts
from deforum_ray.job.spec import load_job
from deforum_ray.model.loading import build_tiny
from deforum_ray.model.vae import decode


def ours(model, spec, frames: int) -> float:
    clip = spec.clips[0]
    chain = Chain(model, clip, spec.width, spec.height, encode_prompts(model, list(clip.prompts.values())))
    def decoded(n, z, state):
        decode(model, z)

    run_chain(chain, LoopState(), 2, decoded)  # warm-up
    start = time.perf_counter()
    run_chain(chain, LoopState(), frames, decoded)
    return frames / (time.perf_counter() - start)


def baseline(model, spec, frames: int) -> float:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline
    from PIL import Image

    pipe = FluxImg2ImgPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=model.vae, text_encoder=model.text_encoder,
        tokenizer=model.tokenizer, text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
        transformer=model.transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    clip = spec.clips[0]
    prompt = clip.prompts[0]
    image = Image.fromarray(np.full((spec.height, spec.width, 3), 127, np.uint8))

    def frame(picture):
        zoomed = picture.resize((int(spec.width * 1.02), int(spec.height * 1.02)), Image.BICUBIC)
        left, top = (zoomed.width - spec.width) // 2, (zoomed.height - spec.height) // 2
        warped = zoomed.crop((left, top, left + spec.width, top + spec.height))
        return pipe(prompt=prompt, image=warped, strength=0.5, num_inference_steps=4, guidance_scale=0.0,
                    height=spec.height, width=spec.width, max_sequence_length=model.max_text_length,
                    generator=torch.Generator().manual_seed(0)).images[0]

    image = frame(image)  # warm-up
    start = time.perf_counter()
    for _ in range(frames):
        image = frame(image)
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--baseline-frames", type=int, default=12)
    args = parser.parse_args()
    spec = load_job({"name": "bench", "model": "tiny", "width": args.size, "height": args.size, "strength": 0.5,
                     "motion": {"zoom": "0:(1.02)"}, "num_frames": args.frames, "prompts": {0: "a lighthouse at dusk"},
                     "output": {"uri": "memory://bench"}})
    model = build_tiny(seed=0, device="cpu")
    fps_ours = ours(model, spec, args.frames)
    fps_base = baseline(model, spec, args.baseline_frames)
    print(f"cpu, tiny, {args.size}x{args.size}, 4 steps, strength 0.5, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"deforum-ray latent loop     {fps_ours:7.1f} frames/s  ({args.frames} frames)")
    print(f"diffusers FluxImg2Img/frame {fps_base:7.1f} frames/s  ({args.baseline_frames} frames)")
    print(f"ratio                       {fps_ours / fps_base:7.2f}x")


if __name__ == "__main__":
    main()
