from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# The files that take longest (about 2 minutes to 15 s each on 2 cores), in that order: they start
# first, so that `pytest -n 2 --dist loadfile` (.ci/run) ends with short files on both processes
# instead of one long file on one. Within a file, and for every other file, the order is pytest's.
SLOW_FILES_FIRST = ("test_ray.py", "test_crash.py", "test_hostile.py", "test_resume.py", "test_s3.py",
                    "test_render.py", "test_bench.py", "test_fetch.py", "test_package.py", "test_queue.py",
                    "test_compile_cache.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def write_job(tmp_path: Path):
    """Write a job mapping as YAML under tmp_path and return its path."""

    def write(job: dict, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return path

    return write


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """An output folder that already holds a finished render, to prove bad input leaves it alone."""
    out = tmp_path / "renders"
    (out / "earlier-000000000000").mkdir(parents=True)
    (out / "earlier-000000000000" / "earlier.mp4").write_bytes(b"an earlier render")
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under a folder with its size, mtime and content."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            stat = path.stat()
            data = path.read_bytes() if path.is_file() else b""
            out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, data)
    return out


# --- running the real CLI as a user (or a killed render farm node) would ---------------------------

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

CLI = str(Path(sys.executable).with_name("deforum-ray"))


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def status_here(capsys, where: str) -> tuple[int, str]:
    """``deforum-ray status`` in this process (it starts no Ray: a subprocess would only add
    Python's start-up): (exit code, stdout)."""
    from deforum_ray.cli import main

    capsys.readouterr()
    code = main(["status", where])
    return code, capsys.readouterr().out


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def stop_when(process: subprocess.Popen, ready, sig: int = signal.SIGKILL, timeout: float = 120) -> None:
    """Send ``sig`` as soon as ``ready()`` is true; fail if the process ended first.

    SIGKILL kills the CLI process and every process it started (its embedded Ray) at once, as a
    crash or the OOM killer would; other signals go to the CLI alone. Returns once all of them are
    gone; any left after 30 s are killed, as a node's supervisor would."""
    import psutil

    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"finished before it could be stopped: {process.stderr.read()}"
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.02)  # a tighter poll takes a core from the render it watches
    tree = psutil.Process(process.pid).children(recursive=True)
    if sig == signal.SIGKILL:  # a crash takes the whole render down; Ray alone would take ~2 s more
        for child in tree:
            child.kill()
    process.send_signal(sig)
    process.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=30)
    for leftover in alive:
        leftover.kill()
    psutil.wait_procs(alive, timeout=10)


# --- a real local Ray for in-process renders ------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster():
    """Local Ray with three fake GPUs: workers ask for num_gpus=1 each, as on a GPU cluster.
    Three: the resident ``tiny_pool`` and a two-worker render fit at once, in any test order."""
    import logging

    import ray

    ray.init(num_cpus=4, num_gpus=3, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_pool(ray_cluster):
    """One resident tiny-model worker shared by the tests that only need a renderer."""
    from deforum_ray.render.cluster import WorkerPool
    from deforum_ray.job.spec import ModelSpec

    pool = WorkerPool(ModelSpec(name="tiny", source="tiny", transformer=None, max_text_length=32,
                                shift_timesteps=False), 1)
    pool.start()
    yield pool
    pool.shutdown()


# --- the jobs the crash and resume tests render -----------------------------------------------

EVERY = 5  # checkpoint_every of the resume jobs
SEGMENTED = {"segment_length": 12}


def resume_job(folder: Path, frames: int = 150, **top) -> Path:
    """A two-clip job (a long one with a prompt change, a short one) with checkpoints every EVERY."""
    job = {
        "name": "resume", "model": "tiny", "width": 64, "height": 64, "seed": 11,
        "noise_mode": "slerp", "color_coherence": "match_frame",
        "motion": {"zoom": "0:(1.01)", "angle": "0:(0.5)"},
        "clips": [{"name": "long", "num_frames": frames, "prompts": {0: "a red fox", min(40, frames - 1): "a snowy hill"}},
                  {"name": "short", "num_frames": 12, "prompts": {0: "a quiet harbour"}}],
        # One torch thread, as the session's (fake-GPU) workers have: a render here in-process and one
        # in a process of its own give the same bytes, so references need no process of their own.
        "cluster": {"checkpoint_every": EVERY, "cpu_threads": 1},
    }
    job.update(top)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def render_here(capsys, *args: str) -> tuple[int, str, str]:
    """``deforum-ray render`` in this process, on the session's Ray with one worker: the same CLI
    path without paying for a Ray start (the kill tests need a process of their own). Without
    ``capsys`` (module fixtures) the output is left to pytest and not returned."""
    from deforum_ray.cli import main

    if capsys is not None:
        capsys.readouterr()
    code = main(["render", *args, "cluster.num_workers=1", "--no-progress"])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def frame_hashes(job_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(job_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(job_dir.glob("segments/*/*/frames/*.png"))}


def only_job_dir(out: Path) -> Path:
    (job_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return job_dir


def tiny_depth_anything(seed: int = 0):
    """A Depth Anything with a few thousand random weights: the architecture of the real ones."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, fusion_hidden_size=16,
                                 neck_hidden_sizes=[8, 16, 32, 32], reassemble_factors=[4, 2, 1, 0.5],
                                 head_hidden_size=8, patch_size=14)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DepthAnythingForDepthEstimation(config).eval()


@pytest.fixture(scope="session")
def depth_folder(tmp_path_factory) -> Path:
    """A tiny random Depth Anything saved to a folder, with a preprocessor config that shrinks its input."""
    folder = tmp_path_factory.mktemp("tiny-depth")
    tiny_depth_anything().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], '
                                                     '"size": {"height": 56, "width": 56}}')
    return folder
