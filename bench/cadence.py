"""Diffusion cadence: frames/s and flicker of `deforum-ray render` at cadence N = 1, 2, 4, one run.

    python bench/cadence.py [--cadences 1 2 4] [--frames 48] [--size 128] [--model tiny] [--out cadence.json]

A 48-frame clip with a steady zoom and turn, rendered through the CLI (a process of its own:
driver, embedded Ray, one worker, the store) at each cadence. frames/s is frames over the span of
the run log after the first frame (store writes count; model load does not). Flicker is measured
on the stored latents, as what the camera does not explain: the mean absolute difference between
each frame and the frame before it moved by that frame's motion (the same warp the loop uses), and
its spread (standard deviation) over the clip; steadier pictures have smaller, more even residuals.
The raw frame-to-frame step (camera motion included) is given beside it.
The ratio is to N = 1 in the same run. On the GPU, ``bench/throughput.py --variants compiled,
compiled-c2,compiled-c4`` gives the same figures for FLUX.1-schnell-sized weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforum_ray.store import RenderStore  # noqa: E402


def zoom_job(name: str, size: int, frames: int, cadence: int, out: Path, model: object = "tiny",
             chains: int = 1, cluster: dict | None = None) -> dict:
    """A zooming, turning clip (the motion cadence has to follow); one clip per chain."""
    return {
        "name": name, "model": model, "width": size, "height": size, "seed": 1, "steps": 4, "strength": 0.5,
        "cadence": cadence, "color_coherence": "match_first",
        "motion": {"zoom": "0:(1.02)", "angle": "0:(0.3)"},
        "clips": [{"name": f"c{i}", "num_frames": frames, "prompts": {0: "a lighthouse at dusk"}} for i in range(chains)],
        "output": {"uri": str(out)},
        "cluster": {"num_workers": 1, "chains_per_worker": chains, **(cluster or {})},
    }


def flicker(job_dir: Path, clip: str = "c0") -> dict:
    """Per frame step of a clip's stored latents: the residual after the camera motion (mean,
    spread, largest) and the raw step."""
    from deforum_ray.frame.loop import FrameSchedules
    from deforum_ray.frame.motion import warp
    from deforum_ray.job.spec import load_job

    store = RenderStore(str(job_dir))
    spec = load_job(yaml.safe_load(store.get("spec.yaml")))
    settings = next(c for c in spec.clips if c.name == clip)
    schedules = FrameSchedules.of(settings, spec.height)
    frames = sorted(store.frames_done(clip, 0))
    latents = [store.get_tensors(store.latent_rel(clip, 0, n))["latent"].float() for n in frames]
    residual, raw = [], []
    for n, (a, b) in enumerate(zip(latents, latents[1:]), start=1):
        moved = warp(a, schedules.motion(n), settings.motion.interpolation, settings.motion.padding)
        residual.append(float((b - moved).abs().mean()))
        raw.append(float((b - a).abs().mean()))
    residual_ = np.array(residual)
    return {"flicker_mean": float(residual_.mean()), "flicker_std": float(residual_.std()),
            "flicker_max": float(residual_.max()), "step_mean": float(np.mean(raw))}


def run_log_rate(job_dir: Path) -> dict:
    """frames/s over the run log's span after the first frame, and the frames diffused."""
    rows = [r for r in RenderStore(str(job_dir)).read_runlog() if r["segment"] >= 0]
    stamps = np.array(sorted(r["timestamp"] for r in rows))
    return {"frames": len(rows), "diffused": sum(1 for r in rows if r["diffused"]),
            "fps": (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def render(job: dict, work: Path) -> Path:
    path = work / f"{job['name']}.yaml"
    path.write_text(yaml.safe_dump(job))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "deforum_ray", "render", str(path), "--no-progress"],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{job['name']}: {result.stderr.strip().splitlines()[-1]}")
    (job_dir,) = [p for p in Path(job["output"]["uri"]).iterdir() if p.is_dir()]
    return job_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cadences", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default="cadence.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cadence-"))
    rows = []
    for n in args.cadences:
        job = zoom_job(f"cadence{n}", args.size, args.frames, n, work / f"out{n}", args.model)
        job_dir = render(job, work)
        rows.append({"cadence": n, **run_log_rate(job_dir), **flicker(job_dir)})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["cadence"] == 1), rows[0])
    for row in rows:
        row["ratio"] = row["fps"] / base["fps"]
    Path(args.out).write_text(json.dumps({"model": args.model, "size": args.size, "rows": rows}, indent=2))
    print(f"\n{args.model}, {args.size}x{args.size}, {args.frames} frames, zoom 1.02 + 0.3 deg a frame")
    print(f"{'N':>3} {'diffused':>8} {'frames/s':>9} {'ratio':>6} {'flicker':>8} {'spread':>7} {'max':>7} {'raw step':>8}")
    for r in rows:
        print(f"{r['cadence']:>3} {r['diffused']:>8} {r['fps']:9.2f} {r['ratio']:6.2f} {r['flicker_mean']:8.4f} "
              f"{r['flicker_std']:7.4f} {r['flicker_max']:7.4f} {r['step_mean']:8.4f}")


if __name__ == "__main__":
    main()
