"""The installed ``deforum-ray`` console script, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deforum_ray
from deforum_ray.job.schedule import parse_schedule

SCRIPT = Path(sys.executable).with_name("deforum-ray")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"console script missing: {SCRIPT} (pip install -e .)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"deforum-ray {deforum_ray.__version__}"
    assert deforum_ray.__version__[0].isdigit()


def test_schedule_prints_every_frame():
    text = "0:(1.0), 10:(1 + 0.05*sin(t/3)), 20:(2)"
    result = run_cli("schedule", text, "--frames", "24", "--seed", "3")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == list(range(24))
    np.testing.assert_allclose([float(r[1]) for r in rows], parse_schedule(text, 24, seed=3), rtol=1e-5)


def test_schedule_uses_seed():
    result = run_cli("schedule", "0:(s*2)", "--frames", "2", "--seed", "21")
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["42", "42"]


def test_schedule_accepts_a_bare_negative_number():
    result = run_cli("schedule", "-0.5", "--frames", "2")
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["-0.5", "-0.5"]


def test_bad_schedule_is_one_line_exit_2():
    result = run_cli("schedule", "0:(1.0), 60:(1.1", "--frames", "5")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert 'cannot parse "0:(1.0), 60:(1.1" at position 16' in lines[0]


@pytest.mark.parametrize("frames", ["0", "-3", "ten"])
def test_bad_frame_count_exit_2(frames):
    result = run_cli("schedule", "0:(1)", "--frames", frames)
    assert result.returncode == 2
    assert "--frames" in result.stderr


def test_no_command_prints_help_and_exit_2():
    result = run_cli()
    assert result.returncode == 2
    assert "schedule" in result.stdout


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "deforum_ray", "schedule", "3", "--frames", "1"],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "3"]


DEMO = Path(__file__).resolve().parent.parent / "jobs" / "demo.yaml"


def test_validate_ok(tmp_path):
    result = run_cli("validate", str(DEMO), f"output.uri={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok: {DEMO}: 2 clips, 48 frames, model tiny, 128x128"
    assert not (tmp_path / "out").exists()


def test_plan_prints_clips_and_resolved_spec(tmp_path):
    result = run_cli("plan", str(DEMO), "--show", f"output.uri={tmp_path}/out", "seed=3")
    assert result.returncode == 0, result.stderr
    assert "lighthouse" in result.stdout and "harbour" in result.stdout
    resolved = result.stdout.split("resolved spec:", 1)[1]
    assert "seed: 3" in resolved and "name: lighthouse" in resolved
    assert not (tmp_path / "out").exists()


def test_bad_spec_through_the_console_script(tmp_path):
    existing = tmp_path / "out" / "keep.txt"
    existing.parent.mkdir()
    existing.write_text("keep")
    result = run_cli("render", str(DEMO), f"output.uri={tmp_path}/out", "clips.0.motion.zoom=0:(1.0), 60:(1.1")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith('clips[0].motion.zoom: cannot parse "0:(1.0), 60:(1.1" at position 16')
    assert "Traceback" not in result.stderr
    assert existing.read_text() == "keep" and sorted(p.name for p in existing.parent.iterdir()) == ["keep.txt"]
