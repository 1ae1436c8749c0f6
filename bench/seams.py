"""How visible the seams between parallel segments are, on the tiny model (CPU).

    python bench/seams.py [--frames 64] [--segment 16]

Renders one clip of jobs/demo.yaml with keyframe anchors through the real worker code (in this
process, no Ray), for each noise mode, with blend 0 (no easing) and the default (half the
segment), and prints the largest latent step onto an anchor against the median step inside the
segments. DESIGN.md section 3 asks for seams no larger than an ordinary frame step (ratio <= 1.5).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile

from deforum_ray.model.loading import build_tiny  # noqa: F401  (imports torch once, before timing anything)
from deforum_ray.frame.loop import seam_steps
from deforum_ray.job.plan import plan
from deforum_ray.job.spec import load_job
from deforum_ray.render.local import render_local
from deforum_ray.render.worker import FluxWorker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--segment", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    worker = FluxWorker(load_job("jobs/demo.yaml").model, device="cpu")
    print(f"clip 'lighthouse' of jobs/demo.yaml, {args.frames} frames, tiny on the CPU")
    print(f"{'segment':>7} {'noise_mode':12} {'blend':>5} {'median step':>12} {'worst seam':>11} {'ratio':>6}")
    # blend 0: no easing; half the segment; null: the default, the whole segment after its anchor
    for segment, mode, blend in itertools.product(args.segment, ("fixed", "incremental", "slerp"), ("0", "half", "null")):
        blend = str(segment // 2) if blend == "half" else blend
        overrides = [f"clips.0.num_frames={args.frames}", f"segment_length={segment}", f"noise_mode={mode}",
                     f"blend={blend}", "clips.1.num_frames=2"]
        with tempfile.TemporaryDirectory() as out:
            spec = load_job("jobs/demo.yaml", [*overrides, f"output.uri={out}"])
            latents = render_local(worker, spec, "lighthouse", out)
        seams, inside = seam_steps(latents, plan(spec).clips[0].anchors)
        median = statistics.median(inside)
        print(f"{segment:7d} {mode:12} {spec.clips[0].blend:5d} {median:12.4f} {max(seams):11.4f} {max(seams) / median:6.2f}")


if __name__ == "__main__":
    main()
