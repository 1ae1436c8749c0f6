"""The same job through `deforum-ray render` on 1 and then 2 GPUs of one host.

    python bench/scaling.py --gpus 1 2 --out scaling.json                 # a GPU host
    python bench/scaling.py --fake-gpus --model tiny --size 64 --frames 6  # its CPU check

The job: 4 clips, and one clip cut into 4 anchored segments (``segment_length``), FLUX.1-schnell-
sized random weights (``random:flux1-schnell``) at 512², 4 steps, strength 0.5, compiled, 4 chains
per worker. Each GPU count runs in a process of its own that starts a local Ray with that many
GPUs (``CUDA_VISIBLE_DEVICES`` the first N; ``--fake-gpus``: N declared, workers on the CPU) and
calls the CLI's ``render``: driver, actors, store and final stage, as a user runs it. The compile
cache is warmed by a short render of the same shape on each GPU count first, so no run pays for
compiling and the other not.

From the wall clock and the run log it reports, per GPU count: frames/s over the job and over the
rendering span, the speed-up and scaling efficiency against one GPU, each worker's frames and busy
time (the union of its frames' intervals), and the time outside the workers: start (Ray, model load, embedding, compile) until the first
frame, the anchor chain (segments wait for it), and the final stage after the last frame.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIPS, SEGMENTS = 4, 4


def job_spec(model: str, size: int, frames: int, workers: int, out: Path, cache: Path, per_worker: int) -> dict:
    """4 clips of ``frames`` and one clip of 4 segments of ``frames`` each."""
    source = {"tiny": {"preset": "tiny"}, "random": {"preset": "flux1-schnell-random"}}[model]
    gpu = model != "tiny"
    clips = [{"name": f"clip{i}", "num_frames": frames, "prompts": {0: f"a lighthouse at dusk, take {i}"}}
             for i in range(CLIPS)]
    clips.append({"name": "long", "num_frames": frames * SEGMENTS, "segment_length": frames,
                  "prompts": {0: "a harbour at night", frames * 2: "a harbour at dawn"}})
    return {"name": "scaling", "model": source, "width": size, "height": size, "seed": 7, "steps": 4,
            "strength": 0.5, "color_coherence": "match_first",
            "motion": {"zoom": "0:(1.02)", "angle": "0:(0.3)"}, "clips": clips, "output": {"uri": str(out)},
            "cluster": {"num_workers": workers, "chains_per_worker": per_worker, "compile": gpu,
                        "compile_cache": str(cache), **({} if gpu else {"cpu_threads": 1})}}


def run_child(job: Path, gpus: int, fake: bool) -> int:
    """In a process of its own: a local Ray with ``gpus`` GPUs, then the CLI's render."""
    if not fake:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
    import ray

    from deforum_ray import cli

    from deforum_ray.store import RenderStore

    started = time.time()
    ray.init(num_gpus=gpus, num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
             _node_ip_address="127.0.0.1", logging_level="WARNING")
    job.with_suffix(".ray.json").write_text(json.dumps({"ray_init_s": time.time() - started}))
    try:
        code = cli.main(["render", str(job), "--no-progress"])
    finally:
        ray.shutdown()
    if code == 0:  # the run log, for the parent (which then needs neither Ray nor pyarrow)
        spec = yaml.safe_load(job.read_text())
        (job_dir,) = [p for p in Path(spec["output"]["uri"]).iterdir() if p.is_dir()]
        job.with_suffix(".runlog.json").write_text(json.dumps(RenderStore(str(job_dir)).read_runlog()))
    return code


def measure(model: str, size: int, frames: int, gpus: int, fake: bool, per_worker: int, work: Path,
            cache: Path) -> dict:
    out = work / f"gpus{gpus}"
    job = work / f"gpus{gpus}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    job.write_text(yaml.safe_dump(job_spec(model, size, frames, gpus, out, cache, per_worker)))
    started = time.time()
    child = subprocess.run([sys.executable, __file__, "--child", str(job), "--gpus", str(gpus)]
                           + (["--fake-gpus"] if fake else []), capture_output=True, text=True, cwd=ROOT)
    ended = time.time()
    if child.returncode != 0:
        raise SystemExit(f"render on {gpus} GPU(s) failed:\n{child.stderr[-3000:]}")
    job.with_suffix(".log").write_text(child.stdout + child.stderr)
    return summarize(json.loads(job.with_suffix(".runlog.json").read_text()), started, ended, gpus) | {
        "frames_per_chain": frames, **json.loads(job.with_suffix(".ray.json").read_text())}


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """The time covered by a worker's frame intervals (chains advanced together overlap)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summarize(rows: list[dict], started: float, ended: float, gpus: int) -> dict:
    """The run log of one render, against its wall clock: where the time went. A row's interval
    is from its frame's start (``timestamp - seconds``) to its ``timestamp``."""
    frames = [r for r in rows if r["segment"] >= 0]
    anchors = [r for r in rows if r["segment"] < 0]
    interval = lambda r: (r["timestamp"] - r["seconds"], r["timestamp"])  # noqa: E731
    first, last = min(interval(r)[0] for r in rows), max(r["timestamp"] for r in rows)
    workers = {}
    for name in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == name]
        busy = busy_seconds([interval(r) for r in mine])
        stamps = sorted(r["timestamp"] for r in mine)
        workers[name] = {"frames": sum(r["segment"] >= 0 for r in mine), "anchor_rows": sum(r["segment"] < 0 for r in mine),
                         "busy_s": busy, "busy_share": busy / (last - first),
                         # its first row's time holds the compiled graph's first call (trace, cache load)
                         "first_row_s": min(mine, key=lambda r: r["timestamp"])["seconds"],
                         "idle_after_s": last - stamps[-1],
                         "steady_fps": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0}
    return {"gpus": gpus, "frames": len(frames), "wall_s": ended - started, "job_fps": len(frames) / (ended - started),
            "render_span_s": last - first, "render_fps": len(frames) / (last - first),
            "start_to_first_frame_s": first - started, "final_stage_s": ended - last,
            "anchor_chain_s": busy_seconds([interval(r) for r in anchors]), "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", choices=("random", "tiny"), default="random")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, nargs="+", default=[48], help="frames of each clip and of each segment")
    parser.add_argument("--chains-per-worker", type=int, default=4)
    parser.add_argument("--fake-gpus", action="store_true", help="declare the GPUs to Ray; workers on the CPU")
    parser.add_argument("--work", default=None)
    parser.add_argument("--out", default="scaling.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raise SystemExit(run_child(Path(args.child), args.gpus[0], args.fake_gpus))

    work = Path(args.work or tempfile.mkdtemp(prefix="scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "compile-cache"
    if args.model != "tiny":  # warm the compile cache for every batch shape each GPU count meets, not counted
        for n in args.gpus:
            started = time.time()
            measure(args.model, args.size, 2, n, args.fake_gpus, args.chains_per_worker, work / "warm-up", cache)
            print(f"warm-up on {n} GPU(s): {time.time() - started:.1f} s", flush=True)
    facts = {"model": args.model, "size": args.size, "frames": args.frames, "fake_gpus": args.fake_gpus,
             "chains_per_worker": args.chains_per_worker}
    results = []
    for frames in args.frames:  # each result is kept as it comes: a run cut short reports what it measured
        for n in args.gpus:
            row = measure(args.model, args.size, frames, n, args.fake_gpus, args.chains_per_worker,
                          work / f"frames{frames}", cache)
            one = next(r for r in results + [row] if r["frames_per_chain"] == frames)
            row["speedup"] = row["job_fps"] / one["job_fps"] * one["gpus"]
            row["efficiency"] = row["speedup"] / row["gpus"]
            row["render_speedup"] = row["render_fps"] / one["render_fps"] * one["gpus"]
            results.append(row)
            Path(args.out).write_text(json.dumps({"facts": facts, "results": results}, indent=2))
            # the raw run log beside the results: where each worker's time went, frame by frame
            for suffix in (".runlog.json", ".log"):
                Path(args.out).with_name(f"{Path(args.out).stem}-frames{frames}-gpus{n}{suffix}").write_text(
                    (work / f"frames{frames}" / f"gpus{n}{suffix}").read_text())
            print(f"{frames} frames a chain, {n} GPU(s): {row['job_fps']:.2f} frames/s over {row['wall_s']:.1f} s",
                  flush=True)
    print(f"{'chain':>5} {'GPUs':>4} {'frames':>6} {'wall s':>7} {'job f/s':>8} {'speed-up':>8} {'eff.':>5} {'render f/s':>10} "
          f"{'start s':>7} {'anchors s':>9} {'final s':>7}  workers (frames, busy share, first row s, steady f/s)")
    for r in results:
        busy = ", ".join(f"{w['frames']} {w['busy_share']:.0%} {w['first_row_s']:.1f} {w['steady_fps']:.1f}"
                         for w in r["workers"].values())
        print(f"{r['frames_per_chain']:>5} {r['gpus']:>4} {r['frames']:>6} {r['wall_s']:7.1f} {r['job_fps']:8.2f} {r['speedup']:8.2f} "
              f"{r['efficiency']:5.0%} {r['render_fps']:10.2f} {r['start_to_first_frame_s']:7.1f} "
              f"{r['anchor_chain_s']:9.1f} {r['final_stage_s']:7.1f}  {busy}")


if __name__ == "__main__":
    main()
