"""Whole jobs through `deforum-ray render`: start to first frame, frames/s, the final-stage tail.

    python bench/job.py --out job.json [--runs deforum-fp8,deforum-fp8-warm,four-clips-bf16]

Each run is one `deforum-ray render` command in a process of its own, on schnell-sized random
weights (``model: flux1-schnell-random``) compiled (``cluster.compile: true``), one worker:

- ``deforum``: Deforum's own default settings file (tests/data/deforum), `deforum-ray import`ed,
  3D with a Depth Anything V2 Small-sized random depth model, cadence 2, rendered at 480 frames
  in segments of 30, 4 chains per worker (Step 18's issue);
- ``four-clips``: bench/throughput.py's job, 4 clips of 24 frames, 4 chains per worker.

A run's name ends in its precision (``-bf16``, ``-fp8``); ``-warm`` runs it again on the compile
cache folder the run without it filled (a worker's second start on the same machine);
``-newnode`` on a fresh folder holding only the compile artifacts that run saved (a new node of
the cluster, or tomorrow's fresh pod, with ``cluster.compile_cache`` in a store).

Figures, from the command's own clock and the job's store: ``start_s`` the command's start to
its first frame written; ``frames_fps`` frames over the span from the first to the last frame;
``tail_s`` the last frame to the command's end, split into ``video_s`` (to the video written),
``page_s`` (to the job's page written) and ``exit_s`` (to the command's end: Ray's shutdown);
``job_s`` the whole command, ``job_fps`` frames over it; ``phases`` the start phase by phase
(``starts/``). With ``--check``, ``same_as_after``: the videos the render made while rendering
are byte for byte those the stage after the render makes from the same store (``after_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforum_ray.store import RenderStore  # noqa: E402
from throughput import depth_folder, render_job  # noqa: E402  (bench/throughput.py)

DEFORUM_DEFAULT = ROOT / "tests" / "data" / "deforum" / "deforum-default_settings.txt"


def deforum_job(work: Path, precision: str, frames: int, cache: Path, out: Path) -> tuple[Path, list[str]]:
    """The imported Deforum default and the overrides of Step 18's issue."""
    spec = work / "deforum-default.yaml"
    if not spec.exists():
        subprocess.run([sys.executable, "-m", "deforum_ray", "import", str(DEFORUM_DEFAULT), "-o", str(spec),
                        "--model", "flux1-schnell-random"], check=True, cwd=ROOT, env=_env(), capture_output=True)
    return spec, [f"num_frames={frames}", "segment_length=30", f"model.precision={precision}",
                  f"motion.depth={depth_folder(work)}", "cluster.chains_per_worker=4", "cluster.num_workers=1",
                  "cluster.compile=true", f"cluster.compile_cache={cache}", f"output.uri={out}"]


def four_clips_job(work: Path, precision: str, frames: int, cache: Path, out: Path) -> tuple[Path, list[str]]:
    spec = work / f"four-clips-{precision}.yaml"
    cluster = {"compile": True, "compile_cache": str(cache), "precision": precision}
    spec.write_text(yaml.safe_dump(render_job(512, 4, frames, cluster, out)))
    return spec, []


WORKLOADS = {"deforum": (deforum_job, 480), "four-clips": (four_clips_job, 24)}


def run(name: str, work: Path, frames: int | None, check: bool = False) -> dict:
    base = name.removesuffix("-warm").removesuffix("-newnode")
    workload, precision = base.rsplit("-", 1)
    make, default_frames = WORKLOADS[workload]
    out = work / "renders" / name
    cache = work / "cache" / base
    if name.endswith("-newnode"):  # nothing of Inductor's, only what the first run kept for others
        cache = work / "cache" / name
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(work / "cache" / base / "compile-artifacts", cache / "compile-artifacts")
    spec, overrides = make(work, precision, frames or default_frames, cache, out)
    started_at, started = time.time(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "deforum_ray", "render", str(spec), *overrides, "--no-progress"],
                            capture_output=True, text=True, cwd=ROOT, env=_env())
    job_s = time.perf_counter() - started
    if result.returncode != 0:
        return {"run": name, "error": result.stderr.strip().splitlines()[-5:]}
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    store = RenderStore(str(folder))
    stamps = sorted(r["timestamp"] for r in store.read_runlog() if r["segment"] >= 0)
    start = store.starts()[-1]
    ended = started_at + job_s
    video = max(p.stat().st_mtime for p in folder.glob("*.mp4"))
    page = (folder / "report.html").stat().st_mtime
    row = {"run": name, "frames": len(stamps), "start_s": stamps[0] - started_at,
            "frames_fps": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "tail_s": ended - stamps[-1],
            "video_s": video - stamps[-1], "page_s": page - video, "exit_s": ended - page,
            "job_s": job_s, "job_fps": len(stamps) / job_s, "phases": start["phases"], "workers": start["workers"],
            "stderr": result.stderr.splitlines()[:40]}
    if check:
        row.update(same_as_after(store, spec, overrides))
    return row


def same_as_after(store: RenderStore, spec: Path, overrides: list[str]) -> dict:
    """The render made its videos while rendering; the stage after the render (``finalize``, as
    before Step 18) makes them again from the same store: equal bytes mean the same frames in
    the same order through the same encoder."""
    from deforum_ray.job.plan import plan
    from deforum_ray.job.spec import load_job
    from deforum_ray.post.finalize import FINAL, finalize

    job = load_job(str(spec), overrides)
    during = {p.name: p.read_bytes() for p in Path(store.root).glob("*.mp4")}
    store.discard(FINAL)
    started = time.perf_counter()
    after = finalize(store, plan(job), job)
    return {"after_s": time.perf_counter() - started, "after_encoded": after.encoded,
            "same_as_after": during == {p.name: p.read_bytes() for p in Path(store.root).glob("*.mp4")}}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}:{os.environ.get('PYTHONPATH', '')}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="deforum-fp8,deforum-fp8-warm,deforum-fp8-newnode,four-clips-bf16")
    parser.add_argument("--frames", type=int, default=None, help="frames of a clip (default: the workload's)")
    parser.add_argument("--work", default=None, help="folder for renders and compile caches")
    parser.add_argument("--out", default="job.json")
    parser.add_argument("--check", action="store_true",
                        help="after each run, make its videos again with the stage after the render and compare")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-job-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.runs.split(","):
        row = run(name, work, args.frames, args.check)
        results.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\n{'run':<22} {'frames':>6} {'start s':>8} {'frames/s':>9} {'tail s':>7} {'video':>6} {'page':>5} "
          f"{'exit':>5} {'job s':>7} {'job f/s':>8}  phases")
    for row in results:
        if "error" in row:
            print(f"{row['run']:<22} failed: {row['error']}")
            continue
        phases = ", ".join(f"{p['phase']} {p['seconds']:.1f}" for p in row["phases"])
        print(f"{row['run']:<22} {row['frames']:>6} {row['start_s']:8.1f} {row['frames_fps']:9.2f} {row['tail_s']:7.1f} "
              f"{row['video_s']:6.1f} {row['page_s']:5.1f} {row['exit_s']:5.1f} {row['job_s']:7.1f} "
              f"{row['job_fps']:8.2f}  {phases}")


if __name__ == "__main__":
    main()
