"""``deforum-ray fetch-model``: a model fetched once into the HF cache, loaded offline after.

The Hub is :class:`fakehub.FakeHub` on loopback serving a saved ``tiny`` folder: the real
``huggingface_hub`` client, the real cache layout, no network.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import CLI, frame_hashes, only_job_dir, render_here
from fakehub import GATED, FakeHub

REPO = "acme/tiny-flux"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from deforum_ray.model.loading import build_tiny

    folder = tmp_path_factory.mktemp("tiny-flux")
    build_tiny(seed=0).save_pretrained(folder)
    return folder


def hub_env(hub: FakeHub | str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    return {**env, "HF_ENDPOINT": hub if isinstance(hub, str) else hub.url, "HF_HOME": str(home)}


def fetch_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "fetch-model", *args], env=env, capture_output=True, text=True, timeout=120)


def test_fetch_model_downloads_once_then_finds_it_cached(tiny_folder, tmp_path):
    home = tmp_path / "hf"
    with FakeHub({REPO: tiny_folder}) as hub:
        fetched = fetch_cli(hub_env(hub, home), REPO)
        assert fetched.returncode == 0, fetched.stderr
        assert f"model {REPO}: downloaded" in fetched.stdout
        assert "Fetching 14 files" in fetched.stderr  # the progress bar
        snapshot = Path(fetched.stdout.strip().split(" into ")[-1])
        assert snapshot.is_relative_to(home / "hub" / "models--acme--tiny-flux" / "snapshots")
        for original in (p for p in tiny_folder.rglob("*") if p.is_file()):
            assert (snapshot / original.relative_to(tiny_folder)).read_bytes() == original.read_bytes()
        asked = len(hub.requests)
        again = fetch_cli(hub_env(hub, home), REPO, "--no-progress")
        assert again.returncode == 0 and f"model {REPO}: already cached" in again.stdout, again.stderr
        assert again.stderr == "" and len(hub.requests) == asked  # the cache was enough: not one request


@pytest.fixture
def hub_here(tmp_path, monkeypatch):
    """``huggingface_hub`` in this process pointed at ``hub_here(url)`` and a cache of the test's own
    (it reads both at call time; a subprocess reads HF_ENDPOINT and HF_HOME instead)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf" / ".agent_harnesses.json"))
    return lambda url: monkeypatch.setattr(constants, "ENDPOINT", url)


def fetch_here(capsys, *args: str) -> tuple[int, str, str]:
    from deforum_ray.cli import main

    capsys.readouterr()
    code = main(["fetch-model", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fetch_model_errors_are_one_line(tiny_folder, tmp_path, hub_here, capsys):
    with FakeHub({REPO: tiny_folder, "acme/gated-flux": GATED}) as hub:
        hub_here(hub.url)
        code, _, err = fetch_here(capsys, "acme/gated-flux")
        assert code == 2 and err.splitlines() == [
            f"model: acme/gated-flux is gated: accept its licence at {hub.url}/acme/gated-flux and set HF_TOKEN"]
        code, _, err = fetch_here(capsys, "acme/no-such-model")
        assert code == 2 and err.splitlines() == [
            "model: no Hugging Face repo 'acme/no-such-model' (a private one needs HF_TOKEN)"]
        assert not (tmp_path / "hf" / "hub" / "models--acme--gated-flux" / "snapshots").exists()
    code, _, err = fetch_here(capsys, REPO)  # the hub is gone: nothing cached, nothing to fall back on
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"deforum-ray: model: cannot reach the Hugging Face Hub at {hub.url} to fetch {REPO}")
    code, _, err = fetch_here(capsys, "flux-one")
    assert code == 2 and "'flux-one' is no model preset (flux1-dev, " in err
    code, out, _ = fetch_here(capsys, "tiny")
    assert code == 0 and out.strip() == "model tiny: built in-process, nothing to fetch"
    code, out, _ = fetch_here(capsys, str(tiny_folder))
    assert code == 0 and "a local folder, nothing to fetch" in out
    code, _, err = fetch_here(capsys, "./no-such-folder")
    assert code == 2 and err.strip() == "model: './no-such-folder' is neither a folder here nor a Hugging Face repo id (owner/name)"
    code, _, err = fetch_here(capsys, str(tmp_path))  # a folder, but no model in it
    assert code == 2 and err.strip().endswith("has no model_index.json: not a diffusers model folder")


def test_a_depth_preset_is_fetched_as_a_depth_model_and_loads_offline_after(depth_folder, tmp_path, hub_here,
                                                                             capsys):
    """``fetch-model depth-anything-v2-small`` downloads the preset's repository (a transformers
    depth estimator: its config, preprocessor config and weights) into the cache, where
    ``motion.depth`` then finds it with the hub gone."""
    import torch

    from deforum_ray.job.choices import DEPTH_PRESETS
    from deforum_ray.model.depth import DepthModel, DepthModelError

    repo = DEPTH_PRESETS["depth-anything-v2-small"]
    with pytest.raises(DepthModelError, match="run deforum-ray fetch-model depth-anything-v2-small$"):
        DepthModel.load("depth-anything-v2-small")  # not fetched yet
    with FakeHub({repo: depth_folder, "acme/depth": depth_folder}) as hub:  # into the cache hub_here reads
        fetched = fetch_cli(hub_env(hub, tmp_path / "hf"), "depth-anything-v2-small", "--no-progress")
        assert fetched.returncode == 0 and fetched.stdout.startswith(f"model {repo}: downloaded"), fetched.stderr
        fetched = fetch_cli(hub_env(hub, tmp_path / "hf"), "acme/depth", "--depth", "--no-progress")
        assert fetched.returncode == 0 and fetched.stdout.startswith("model acme/depth: downloaded"), fetched.stderr
    depth = DepthModel.load("depth-anything-v2-small")
    assert depth.size == 56  # its preprocessor config came along
    reference = DepthModel.load(str(depth_folder))
    rgb = torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8)
    assert torch.equal(depth.latent_depth(rgb, (4, 6)), reference.latent_depth(rgb, (4, 6)))
    assert DepthModel.load("acme/depth").size == 56
    code, _, err = fetch_here(capsys, str(tmp_path), "--depth")  # a folder without a depth model
    assert code == 2 and err.strip().endswith("has no config.json: not a transformers model folder")


def test_all_nodes_fetch_then_a_render_loads_the_cached_model_with_the_hub_unreachable(
        ray_cluster, tiny_folder, tmp_path, capsys, monkeypatch):
    """One fetch task per node of the running cluster (here the tests' one node), through the CLI;
    then the hub goes away and a render of the repo loads every part from the cache: its frames
    are those of a render of the same weights from their folder."""
    from deforum_ray.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # forwarded to the cluster's tasks and actors
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub({REPO: tiny_folder}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        (node,) = [n["NodeManagerAddress"] for n in ray_cluster.nodes() if n["Alive"]]
        capsys.readouterr()
        assert main(["fetch-model", REPO, "--all-nodes", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"node {node}: model {REPO}: downloaded") and len(out.splitlines()) == 1
        assert any("/resolve/" in r for r in hub.requests)
        assert main(["fetch-model", REPO, "--all-nodes", "--no-progress"]) == 0
        assert f"node {node}: model {REPO}: already cached" in capsys.readouterr().out
    job = tmp_path / "job.yaml"
    job.write_text("name: fetched\nwidth: 64\nheight: 64\nseed: 3\nmotion: {zoom: '0:(1.02)'}\n"
                   "clips: [{name: a, num_frames: 4, prompts: {0: a lighthouse}}]\n")
    renders = {}
    for source in (REPO, str(tiny_folder)):
        out_dir = tmp_path / f"out-{len(renders)}"
        model = f"model={{source: {source}, max_text_length: 32}}"
        code, _, err = render_here(capsys, str(job), model, f"output.uri={out_dir}")
        assert code == 0, err
        renders[source] = frame_hashes(only_job_dir(out_dir))
    assert len(renders[REPO]) == 4 and renders[REPO] == renders[str(tiny_folder)]
