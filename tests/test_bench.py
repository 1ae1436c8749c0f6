"""The benchmark scripts that measure on a GPU, run here on the CPU so they work when a GPU comes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scaling_bench_renders_the_same_job_on_one_and_two_fake_gpus(tmp_path):
    """bench/scaling.py with two GPUs declared to Ray (workers on the CPU, the tiny model): the
    same frames on 1 and 2 GPUs, one worker per GPU, and the time accounted for."""
    out = tmp_path / "scaling.json"
    frames = 3
    done = subprocess.run([sys.executable, "bench/scaling.py", "--fake-gpus", "--model", "tiny", "--size", "64",
                           "--frames", str(frames), "--gpus", "1", "2", "--work", str(tmp_path / "work"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = json.loads(out.read_text())["results"]
    expected = 4 * frames + 4 * frames  # 4 clips, and one clip of 4 segments
    assert (one["gpus"], two["gpus"]) == (1, 2) and one["frames"] == two["frames"] == expected
    assert len(one["workers"]) == 1 and len(two["workers"]) == 2
    assert sum(w["frames"] for w in two["workers"].values()) == expected
    assert all(0 < w["busy_s"] <= two["render_span_s"] + 1e-6 for w in two["workers"].values())
    assert one["speedup"] == 1.0 and two["efficiency"] == two["speedup"] / 2 > 0
    for row in (one, two):
        assert 0 < row["render_span_s"] < row["wall_s"] and row["anchor_chain_s"] > 0
        assert row["start_to_first_frame_s"] > 0 and row["final_stage_s"] > 0
    from importlib.util import module_from_spec, spec_from_file_location

    loaded = spec_from_file_location("scaling", REPO / "bench" / "scaling.py")
    scaling = module_from_spec(loaded)
    loaded.loader.exec_module(scaling)
    assert scaling.busy_seconds([(0, 2), (1, 3), (5, 6)]) == 4  # overlapping chains count once, gaps not
    assert "GPUs" in done.stdout and "busy share" in done.stdout  # the table
    for n in (1, 2):  # the raw run log beside the results
        rows = json.loads((tmp_path / f"scaling-frames{frames}-gpus{n}.runlog.json").read_text())
        assert sum(r["segment"] >= 0 for r in rows) == expected
    assert all(w["steady_fps"] > 0 and w["first_row_s"] > 0 for w in two["workers"].values())
