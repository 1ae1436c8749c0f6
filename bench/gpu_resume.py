"""A chain stopped between two cadence keys and resumed on the GPU gives the bits of a straight run.

    python bench/gpu_resume.py [--size 256] [--frames 11]

FLUX.1-schnell-sized random weights on the GPU (no download), 4 steps, slerp noise, colour
coherence, a zoom and turn (2d), or a 3d camera over the depth a Depth Anything V2 Small-sized
model with random weights sees (``bench/depth.py``). For each camera, cadence 1 and 3 and one and
two chains advanced together
(``cluster.chains_per_worker``): a straight run of every frame; then a run stopped at frame 5
(at cadence 3 between keys 3 and 6), its states through safetensors bytes on the CPU as a
checkpoint is, and resumed. Prints whether every picture and latent is equal. The CPU side is
tested (tests/test_cadence.py); this is the same check where float kernels differ by batch.

Measured 2026-11-26 on one H100 (eager, 256²): equal for all eight cases (and each chain of them).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deforum_ray.frame.loop import Chain, FrameOut, Lane, LoopState, advance  # noqa: E402
from deforum_ray.frame.prompts import encode_prompts  # noqa: E402
from deforum_ray.job.spec import load_job  # noqa: E402
from deforum_ray.model.depth import DepthModel  # noqa: E402
from deforum_ray.model.loading import build_random  # noqa: E402
from depth import small_sized  # noqa: E402  (bench/depth.py)

CAMERAS = {"2d": {"zoom": "0:(1.03)", "angle": "0:(2)"},
           "3d-depth": {"mode": "3d", "translation_z": "0:(4)", "rotation_3d_y": "0:(1)", "translation_x": "0:(3)"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=11)
    args = parser.parse_args()
    model = build_random("flux1-schnell", device="cuda")
    embeddings = encode_prompts(model, ["a red fox", "a snowy hill"])
    folder = Path(tempfile.mkdtemp(prefix="depth-")) / "small-sized"
    torch.manual_seed(0)
    small_sized().save_pretrained(folder)
    depth = DepthModel.load(str(folder), "cuda")
    all_equal = True
    for camera, cadence, chains in itertools.product(CAMERAS, (1, 3), (1, 2)):
        motion = {**CAMERAS[camera], **({"depth": str(folder)} if camera != "2d" else {})}
        spec = load_job({"name": "g", "model": "tiny", "width": args.size, "height": args.size, "seed": 5,
                         "cadence": cadence, "noise_mode": "slerp", "color_coherence": "match_frame",
                         "motion": motion, "output": {"uri": "."},
                         "clips": [{"name": f"c{i}", "num_frames": args.frames, "seed": 5 + i,
                                    "prompts": {0: "a red fox", args.frames // 2: "a snowy hill"}}
                                   for i in range(chains)]})

        def run(states: list[LoopState], stop: int) -> list[list[FrameOut]]:
            outs: list[list[FrameOut]] = [[] for _ in states]
            lanes = [Lane(Chain(model, clip, args.size, args.size, embeddings,
                                depth_model=depth if camera != "2d" else None), state, stop, outs[i].append,
                          pictures=True) for i, (clip, state) in enumerate(zip(spec.clips, states))]
            advance(lanes)
            assert all(lane.error is None for lane in lanes), [lane.error for lane in lanes]
            return outs

        straight = run([LoopState() for _ in spec.clips], args.frames)
        first = run([LoopState() for _ in spec.clips], 5)
        rest = run([LoopState.from_tensors(load(save(o[-1].state.tensors()))) for o in first], args.frames)
        for i in range(chains):
            got = first[i] + rest[i]
            pictures = all(np.array_equal(a.picture, b.picture) for a, b in zip(straight[i], got))
            latents = all(torch.equal(a.z.cpu(), b.z.cpu()) for a, b in zip(straight[i], got))
            equal = pictures and latents and [o.frame for o in got] == list(range(args.frames))
            all_equal &= equal
            print(f"{camera}, cadence {cadence}, {chains} chain(s), chain {i}: {'equal' if equal else 'DIFFERENT'} "
                  f"(pictures {pictures}, latents {latents})")
    print("all equal" if all_equal else "DIFFERENT")
    sys.exit(0 if all_equal else 1)


if __name__ == "__main__":
    main()
