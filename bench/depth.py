"""GPU cost of depth for 3D motion, per frame: the depth model on a decoded frame and the warp.

    python bench/depth.py [--size 512] [--frames 50] [--out depth.json]

Depth Anything V2 Small-sized random weights (Dinov2-S backbone: 384 wide, 12 layers; the DPT
neck and head of the Small checkpoint: about 25M parameters), built here, saved to a folder and
loaded through ``DepthModel.load`` as real weights are (no download). Per frame: the frame to the
model's input (518 on the shorter side), the model, the reduction to the latent grid
(``DepthModel.latent_depth``); then the depth-aware sampling grid of one camera move
(``depth_grid``) and the warp of a 16-channel latent by it. Timed with CUDA events after warm-up,
in float32 and bfloat16; printed beside one FLUX.1-schnell-sized frame from docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deforum_ray.frame.motion import rigid_move, warp_depth  # noqa: E402
from deforum_ray.model.depth import DepthModel  # noqa: E402


def small_sized():
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=518,
                            patch_size=14, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384, fusion_hidden_size=64,
                                 neck_hidden_sizes=[48, 96, 192, 384], reassemble_factors=[4, 2, 1, 0.5],
                                 head_hidden_size=32, patch_size=14)
    return DepthAnythingForDepthEstimation(config).eval()


def timed(fn, repeats: int) -> float:
    """Milliseconds per call, CUDA events, after three warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--out", default="depth.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="depth-")) / "da-v2-small-sized"
    model = small_sized()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    cells = (args.size // 8, args.size // 8)
    rows = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "params_m": params / 1e6,
            "size": args.size}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        started = time.perf_counter()
        depth = DepthModel.load(str(folder), "cuda", dtype)
        rows[f"load_s_{name}"] = time.perf_counter() - started
        rows[f"depth_ms_{name}"] = timed(lambda: depth.latent_depth(rgb, cells), args.frames)
    distances = depth.latent_depth(rgb, cells).double()
    z = torch.randn(1, 16, *cells, device="cuda")

    def warp_once():
        return warp_depth(z, rigid_move((2.0, -1.0, 3.0), (0.5, -0.7, 0.3)), distances, 70, args.size)

    rows["grid_and_warp_ms"] = timed(warp_once, args.frames)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))
    print(f"\n{rows['gpu']}: depth at {args.size}² ({rows['params_m']:.1f}M params) "
          f"{rows['depth_ms_fp32']:.1f} ms fp32, {rows['depth_ms_bf16']:.1f} ms bf16; "
          f"depth grid + warp of a {cells[0]}x{cells[1]} latent {rows['grid_and_warp_ms']:.1f} ms")


if __name__ == "__main__":
    main()
