"""``deforum-ray render a.yaml b.yaml ...``: a queue of jobs on the same resident workers (Step 12)."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import render_here
from deforum_ray.store import RenderStore


def write_job(folder: Path, name: str, out: Path, **clip) -> Path:
    spec = {"name": name, "model": "tiny", "width": 64, "height": 64, "seed": 3, "output": {"uri": str(out)},
            "motion": {"zoom": "0:(1.01)"}, "cluster": {"cpu_threads": 1},
            "clips": [{"name": "a", "num_frames": 4, "prompts": {0: f"a fox, {name}"}, **clip}]}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["job", "spec", "clips"], out
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_a_folder_of_jobs_renders_in_order_on_the_same_workers_and_a_second_run_skips_them(tmp_path, capsys,
                                                                                           ray_cluster):
    jobs, out = tmp_path / "jobs", tmp_path / "renders"
    jobs.mkdir()
    for name in ("one", "two"):
        write_job(jobs, name, out)
    code, stdout, err = render_here(capsys, str(jobs))
    assert code == 0, err
    rows = table_rows(stdout)
    assert list(rows) == ["one", "two"] and all(row[3] == "4" and row[6] == "rendered" for row in rows.values())
    assert all(row[-1].endswith(".mp4") and Path(row[-1]).is_file() for row in rows.values())
    workers = {d.name.split("-")[0]: {r["worker"] for r in RenderStore(str(d)).read_runlog()} for d in out.iterdir()}
    assert workers["one"] == workers["two"] and len(workers["one"]) == 1  # one resident worker, both jobs

    code, stdout, err = render_here(capsys, str(jobs / "one.yaml"), str(jobs / "t*.yaml"))
    assert code == 0, err
    assert [row[6:8] for row in table_rows(stdout).values()] == [["already", "done"]] * 2

    before = {d.name: sorted(d.glob("segments/*/*/frames/*.png")) for d in out.iterdir()}
    hashes = {p: p.read_bytes() for paths in before.values() for p in paths}
    code, stdout, err = render_here(capsys, str(jobs), "--fresh")  # every job from scratch, again
    assert code == 0, err
    assert [row[3] + " " + row[6] for row in table_rows(stdout).values()] == ["4 rendered"] * 2
    assert {p: p.read_bytes() for p in hashes} == hashes  # the same frames again


def test_one_bad_spec_among_good_ones_renders_nothing(tmp_path, capsys):
    out = tmp_path / "renders"
    good = write_job(tmp_path, "good", out)
    bad = write_job(tmp_path, "bad", out, num_frames=0)
    code, stdout, err = render_here(capsys, str(good), str(bad))
    assert code == 2 and "clips[0].num_frames: must be" in err and "1 of 2 specs are bad; nothing was rendered" in err
    assert not out.exists() and "Traceback" not in err


def test_a_job_that_fails_while_rendering_does_not_stop_the_others(tmp_path, capsys, ray_cluster, monkeypatch):
    import deforum_ray.job.spec as spec_module

    out = tmp_path / "renders"
    first = write_job(tmp_path, "first", out)
    broken = write_job(tmp_path, "broken", out, init_image=str(tmp_path / "gone.png"))
    last = write_job(tmp_path, "last", out)
    monkeypatch.setattr(spec_module, "_check_init_image", lambda *args: None)  # as if deleted after validation
    code, stdout, err = render_here(capsys, str(first), str(broken), str(last))
    assert code == 1 and "1 of 3 jobs failed" in err and str(broken) in err, err
    rows = table_rows(stdout)
    assert rows["first"][6] == rows["last"][6] == "rendered" and rows["broken"][6] == "failed:"
    assert "gone.png" in " ".join(rows["broken"]) and "Traceback" not in err
