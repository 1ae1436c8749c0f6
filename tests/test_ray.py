"""The Ray batch system: worker pools, killed workers, failing clips, `ray job submit`."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO
from deforum_ray import cli
from deforum_ray.render.driver import JobFailed, render
from deforum_ray.job.plan import ChainKind
from deforum_ray.job.spec import load_job
from deforum_ray.store import RenderStore


def three_clips(out: Path, frames: int = 10, **top) -> dict:
    job = {
        "name": "farm", "model": "tiny", "width": 64, "height": 64, "seed": 2,
        "motion": {"zoom": "0:(1.02)", "translation_x": "0:(3)"},
        "clips": [{"name": "a", "num_frames": frames, "prompts": {0: "a red fox"}},
                  {"name": "b", "num_frames": frames, "seed": 9, "prompts": {0: "a blue bird"}},
                  {"name": "c", "num_frames": frames, "noise_mode": "slerp", "prompts": {0: "a green hill"}}],
        "cluster": {"checkpoint_every": 5},
        "output": {"uri": str(out)},
    }
    job.update(top)
    return job


def frame_hashes(job_dir: str) -> dict[str, str]:
    root = Path(job_dir)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("segments/*/*/frames/*.png"))}


@pytest.fixture(scope="module")
def one_worker_render(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return render(load_job(three_clips(out), ["cluster.num_workers=1"]), progress=False)


def test_two_workers_render_the_same_frames_as_one(one_worker_render, tmp_path):
    two = render(load_job(three_clips(tmp_path), ["cluster.num_workers=2"]), progress=False)
    assert frame_hashes(two.output_dir) == frame_hashes(one_worker_render.output_dir)
    assert len(frame_hashes(two.output_dir)) == 30
    workers_two = {r["worker"] for r in RenderStore(two.output_dir).read_runlog()}
    workers_one = {r["worker"] for r in RenderStore(one_worker_render.output_dir).read_runlog()}
    assert len(workers_two) == 2 and len(workers_one) == 1
    assert {r.worker for r in two.reports} == workers_two  # the reports name the same workers


def one_long_clip(out: Path, frames: int = 40, segment_length: int = 8, **top) -> dict:
    job = three_clips(out, frames=frames, segment_length=segment_length, **top)
    job["clips"] = job["clips"][2:]  # clip c: slerp noise, zoom and pan
    return job


@pytest.fixture(scope="module")
def segmented_on_one_worker(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("segments-one")
    return render(load_job(one_long_clip(out), ["cluster.num_workers=1"]), progress=False)


def test_a_segmented_clip_renders_the_same_frames_on_one_and_two_workers(segmented_on_one_worker, tmp_path):
    two = render(load_job(one_long_clip(tmp_path), ["cluster.num_workers=2"]), progress=False)
    assert frame_hashes(two.output_dir) == frame_hashes(segmented_on_one_worker.output_dir)
    assert len(frame_hashes(two.output_dir)) == 40
    rows = RenderStore(two.output_dir).read_runlog()
    anchor_rows = [r for r in rows if r["segment"] == -1]
    assert sorted(r["frame"] for r in anchor_rows) == [0, 8, 16, 24, 32]  # stage 1: the anchor chain, once
    frame_rows = [r for r in rows if r["segment"] >= 0]
    assert sorted(r["frame"] for r in frame_rows) == list(range(40))  # stage 2: every frame once
    assert max(r["timestamp"] for r in anchor_rows) < min(r["timestamp"] for r in frame_rows)
    by_worker = {w: {r["segment"] for r in frame_rows if r["worker"] == w} for w in {r["worker"] for r in frame_rows}}
    assert len(by_worker) == 2 and all(by_worker.values())  # the one clip's segments ran on both workers
    assert sorted(set().union(*by_worker.values())) == [0, 1, 2, 3, 4]
    assert [r.label for r in two.reports][0] == "c/anchors"
    assert sorted(r.label for r in two.reports[1:]) == [f"c/{i}" for i in range(5)]
    assert Path(two.video).is_file()


def test_two_chains_per_worker_give_the_same_frames_within_one_level(segmented_on_one_worker, tmp_path):
    batched = render(load_job(one_long_clip(tmp_path), ["cluster.num_workers=1", "cluster.chains_per_worker=2"]),
                     progress=False)
    ours, reference = Path(batched.output_dir), Path(segmented_on_one_worker.output_dir)
    paths = sorted(p.relative_to(reference) for p in reference.glob("segments/*/*/frames/*.png"))
    assert len(paths) == 40 and sorted(p.relative_to(ours) for p in ours.glob("segments/*/*/frames/*.png")) == paths
    worst = max(np.abs(np.asarray(Image.open(ours / p), np.int16) - np.asarray(Image.open(reference / p), np.int16)).max()
                for p in paths)
    assert worst <= 1  # batched matmuls round differently: latents within 1e-6, pixels within one level
    rows = RenderStore(str(ours)).read_runlog()
    assert len({r["worker"] for r in rows}) == 1
    together = [r for r in rows if r["chains"] == 2]
    assert {r["segment"] for r in together} == {0, 1, 2, 3}  # segment 4 had no partner left
    first_two = sorted((r["timestamp"], r["segment"]) for r in together if r["segment"] in (0, 1))
    assert [seg for _, seg in first_two[:4]] in ([0, 1, 0, 1], [1, 0, 1, 0])  # advanced frame by frame, together
    assert {r.advanced_together for r in batched.reports if r.kind is ChainKind.SEGMENT} == {1, 2}


def test_a_killed_worker_is_replaced_and_the_job_finishes_identically(ray_cluster, tmp_path):
    job = three_clips(tmp_path / "undisturbed", frames=60)
    reference = render(load_job(job, ["cluster.num_workers=1"]), progress=False)

    out = tmp_path / "killed"
    spec = load_job(three_clips(out, frames=60), ["cluster.num_workers=1"])
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(r=render(spec, progress=False)))
    thread.start()
    job_dir = None
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:  # the run log names the worker's pid
        dirs = [p for p in out.glob("farm-*") if p.is_dir()]
        if dirs:
            job_dir = dirs[0]
            rows = [r for r in RenderStore(str(job_dir)).read_runlog() if r["clip"] == "a"]
            if rows:
                victim = int(rows[0]["worker"].rsplit(":", 1)[1])
        time.sleep(0.05)
    assert victim is not None, "the worker never logged a frame"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert "r" in result, "the render did not finish after its worker was killed"
    assert frame_hashes(result["r"].output_dir) == frame_hashes(reference.output_dir)
    workers = {r["worker"] for r in RenderStore(result["r"].output_dir).read_runlog()}
    assert len(workers) >= 2 and f"{victim}" in " ".join(workers)  # a new process took over
    assert "a" in result["r"].retried and {r.attempt for r in result["r"].reports if r.label == "a"} == {2}


def test_a_clip_that_always_fails_fails_the_job_after_the_others_finish(ray_cluster, tmp_path, capsys, monkeypatch):
    image = tmp_path / "init.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    job = three_clips(tmp_path / "out")
    job["clips"][1]["init_image"] = str(image)
    spec = load_job(job, ["cluster.num_workers=2"])
    image.unlink()  # deleted after validation
    with pytest.raises(JobFailed) as info:
        render(spec, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("clip 'b' failed at frame 0:") and "init.png" in message
    job_dir = next((tmp_path / "out").glob("farm-*"))
    store = RenderStore(str(job_dir))
    assert store.get(store.done_rel("a", 0)) is not None and store.get(store.done_rel("c", 0)) is not None
    assert store.get(store.done_rel("b", 0)) is None
    # clip a was encoded while b was retried: that stage is thrown away, nothing of it kept
    assert not list(job_dir.glob("*.mp4")) and store.read_json("final.json") is None
    # Its page tells the morning: each retry and the failure, on the clip that failed
    kinds = [(e["kind"], e["object"]) for e in store.events()]
    assert kinds == [("retry", "segments/b/0")] * 2 + [("failed", "segments/b/0")]
    page = (job_dir / "report.html").read_text()
    assert "3 problem(s)" in page and "after 3 attempts: clip &#x27;b&#x27; failed at frame 0" in page

    # the same through the CLI: exit 1, one line naming the clip
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    path = tmp_path / "job.yaml"
    import yaml

    path.write_text(yaml.safe_dump(job))
    import deforum_ray.job.spec as spec_module

    monkeypatch.setattr(spec_module, "_check_init_image", lambda *args: None)  # as if deleted after validation
    image.unlink()
    code = cli.main(["render", str(path), "cluster.num_workers=2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "deforum-ray: render failed: clip 'b' failed at frame 0:" in err


@dataclass
class Cluster:
    """A two-node cluster from infra/runpod's scripts on 127.0.0.1, token auth on."""

    env: dict[str, str]  # a client's: the token in HOME, RAY_AUTH_MODE=token
    home: Path
    head: subprocess.CompletedProcess  # head.sh's output
    head_ports: list[int]
    node_ports: list[int]


BIN = Path(os.sys.executable).parent
needs_ray_cli = pytest.mark.skipif(shutil.which("ray", path=str(BIN)) is None, reason="ray CLI missing")


@pytest.fixture(scope="module")
def runpod_cluster(tmp_path_factory):
    """A head (head.sh) and a second node joined to it (worker.sh), one fake GPU each, so that a
    render's two workers land one on each node. Started once: the job-submit test uses both
    nodes, then the node-loss test kills the second."""
    home = tmp_path_factory.mktemp("home")  # Ray's token lives in ~/.ray: keep the tests' own
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}",
           # the head declares a silent node dead within ~2 s (default ~15 s)
           "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}
    # short temp dirs: Ray's socket paths must stay under 108 characters
    head_dir, node_dir = (tempfile.mkdtemp(prefix=p, dir="/tmp") for p in ("rh", "rn"))
    head_ports, node_ports = _free_ports(7), _free_ports(7)
    hf_home = str(tmp_path_factory.mktemp("hf"))
    try:
        head = start_node("head.sh", env, head_dir, head_ports, NUM_GPUS="1", HF_HOME=hf_home)
        # another loopback address: a driver on 127.0.0.1 attaches to the head's raylet, never to this one
        joined = start_node("worker.sh", env, node_dir, node_ports, NUM_GPUS="1", HF_HOME=hf_home,
                            HEAD=f"127.0.0.1:{head_ports[0]}", NODE_IP="127.0.0.2")
        assert f"joined 127.0.0.1:{head_ports[0]} with 1 GPUs from 127.0.0.2" in joined.stdout
        yield Cluster(env, home, head, head_ports, node_ports)
    finally:
        _stop_cluster(node_dir)  # not `ray stop`: that would stop every Ray here, the tests' own too
        _stop_cluster(head_dir)


@needs_ray_cli
def test_ray_job_submit_against_a_ray_start_head_cluster(runpod_cluster, tmp_path):
    env, home, ports = runpod_cluster.env, runpod_cluster.home, runpod_cluster.head_ports
    bin_dir = BIN
    run = lambda *args, **kw: subprocess.run([str(bin_dir / "ray"), *args], env=env, capture_output=True,  # noqa: E731
                                             text=True, timeout=kw.get("timeout", 120), cwd=kw.get("cwd"))
    assert (home / ".ray" / "auth_token").is_file() and f"Ray head: 127.0.0.1:{ports[0]}" in runpod_cluster.head.stdout
    from deforum_ray.render.cluster import check_cluster

    for gcs in (f"127.0.0.1:{ports[0]}", f"ray://127.0.0.1:{ports[6]}"):  # both greet as gRPC servers do
        check_cluster(gcs, 20)
    address = f"http://127.0.0.1:{ports[1]}"
    out = tmp_path / "renders"
    # submitted as cron does it: infra/cron/nightly.sh, token auth, one log file a night
    nightly = lambda jobs, models="": subprocess.run(  # noqa: E731
        ["bash", str(REPO / "infra" / "cron" / "nightly.sh")], capture_output=True, text=True, timeout=600,
        env={**env, "RAY_DASHBOARD": address, "JOBS": jobs, "LOG_DIR": str(tmp_path / "logs"), "MODELS": models,
             "OVERRIDES": f"output.uri={out} clips.0.num_frames=13 clips.1.num_frames=6"})
    for _ in range(20):  # the head's job agent can take a while to come up on a busy machine
        submitted = nightly("jobs/demo.yaml", models="tiny")  # fetched on every node first
        logs = max((tmp_path / "logs").iterdir(), key=lambda p: p.stat().st_mtime).read_text()
        if "No available agent to submit job" not in logs:
            break
        time.sleep(3)
    assert submitted.returncode == 0, logs[-3000:]
    assert "succeeded" in logs and "finished with exit status 0" in logs
    # MODELS: fetched on each node of the cluster, one line each
    assert len(re.findall(r"^node \S+: model tiny: built in-process, nothing to fetch$", logs, re.M)) == 2
    video = next(out.glob("demo-*/demo.mp4"))
    assert str(video) in logs  # the render printed the video path
    assert "clip lighthouse: 13 frames" in logs and "clip harbour: 6 frames" in logs  # progress lines
    job_id = [line.split("'")[1] for line in logs.splitlines() if "Job '" in line][-1]  # the render's
    job_logs = run("job", "logs", f"--address={address}", job_id)
    assert job_logs.returncode == 0 and "clip lighthouse: 13 frames" in job_logs.stdout
    no_token = subprocess.run([str(bin_dir / "ray"), "job", "status", f"--address={address}", job_id],
                              env={**env, "HOME": str(tmp_path / "elsewhere"), "RAY_AUTH_MODE": ""},
                              capture_output=True, text=True, timeout=120)
    assert no_token.returncode != 0  # token authentication is on: a client without it is refused
    failed = nightly("jobs/no-such-job.yaml")  # the render exits 2: the job fails, and so does the script
    assert failed.returncode != 0 and "deforum-ray nightly failed" in failed.stderr, failed.stderr


def start_node(script: str, env: dict[str, str], temp_dir: str, ports: list[int], **settings: str
               ) -> subprocess.CompletedProcess:
    """A Ray node as a RunPod pod starts it (infra/runpod/head.sh: the token made, token auth on;
    worker.sh: joins ``HEAD``), on 127.0.0.1 with ports of its own: the tests' own Ray holds the
    defaults. ``ports``: the GCS and dashboard (a head), then Ray's agents and the client server."""
    gcs, dashboard, listen, grpc, metrics, runtime_env, client = ports[:7]
    args = [f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={listen}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]
    if script == "head.sh":
        args.append(f"--ray-client-server-port={client}")
        settings = {"RAY_PORT": str(gcs), "DASHBOARD_HOST": "127.0.0.1", "DASHBOARD_PORT": str(dashboard), **settings}
    else:
        args += [f"--node-manager-port={gcs}", f"--object-manager-port={dashboard}"]
    started = subprocess.run(["bash", str(REPO / "infra" / "runpod" / script)], capture_output=True, text=True,
                             timeout=180, env={**env, "NODE_IP": "127.0.0.1", "NUM_CPUS": "2",
                                               "RAY_START_ARGS": " ".join(args), **settings})
    assert started.returncode == 0, started.stderr[-2000:]
    return started


@needs_ray_cli
def test_losing_a_node_mid_render_the_job_finishes_on_the_rest_with_the_same_frames(runpod_cluster, ray_cluster,
                                                                                   tmp_path):
    """The second node's processes are killed once its worker has logged a frame: its chain
    continues from its checkpoint on the head's worker; the frames are those of an undisturbed
    render, and the render names the chain it retried."""
    import psutil

    reference = render(load_job(three_clips(tmp_path / "undisturbed", frames=40), ["cluster.num_workers=1"]),
                       progress=False)
    head_port, node_port = runpod_cluster.head_ports[0], runpod_cluster.node_ports[0]
    # the second node's raylet: every process of that node is its child (its worker among them)
    (raylet,) = [p for p in psutil.process_iter(["cmdline"])
                 if f"--node_manager_port={node_port}" in " ".join(p.info["cmdline"] or [])]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(three_clips(tmp_path / "out", frames=40)))
    render_run = subprocess.Popen([str(BIN / "deforum-ray"), "render", str(job), "--no-progress",
                                   f"cluster.address=127.0.0.1:{head_port}", "cluster.num_workers=2"],
                                  env=runpod_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = None
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline and render_run.poll() is None:
            node_pids = {c.pid for c in raylet.children(recursive=True)}
            for job_dir in (tmp_path / "out").glob("farm-*"):
                rows = RenderStore(str(job_dir)).read_runlog()
                victim = next((r for r in rows if int(r["worker"].rsplit(":", 1)[1]) in node_pids), None)
            time.sleep(0.05)
        assert victim is not None, "no chain was ever rendered on the second node"
        for process in [raylet, *raylet.children(recursive=True)]:
            process.kill()
        out, err = render_run.communicate(timeout=300)
    finally:
        if render_run.poll() is None:
            render_run.kill()
    assert render_run.returncode == 0, err[-3000:]
    assert f"retried from their checkpoints: {victim['clip']}" in err  # the summary names it
    job_dir = Path(out.strip().splitlines()[-1]).parent
    assert frame_hashes(str(job_dir)) == frame_hashes(reference.output_dir)
    rows = [r for r in RenderStore(str(job_dir)).read_runlog() if r["clip"] == victim["clip"]]
    workers = {r["worker"] for r in rows}
    assert len(workers) == 2 and victim["worker"] in workers  # begun on the lost node, ended on the head
    assert min(r["frame"] for r in rows if r["worker"] != victim["worker"]) > 0  # from a checkpoint


def _stop_cluster(temp_dir: str) -> None:
    """Kill the processes of the one cluster that uses ``temp_dir``."""
    import psutil

    mine = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in part for part in (p.info["cmdline"] or []))]
    for process in mine:
        process.terminate()
    _, alive = psutil.wait_procs(mine, timeout=3)
    for process in alive:
        process.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
