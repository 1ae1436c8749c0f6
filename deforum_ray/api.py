"""The Python API the seed's users know: ``create_flux1_pipeline(...).generate_animation(...)``.

It builds a one-clip job spec and goes through the same validation and renderer as the CLI, so
a bad argument gets the same one-line, field-naming error (:class:`deforum_ray.job.spec.SpecError`).
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .render.cluster import WorkerPool, connect
from .render.driver import render
from .job.spec import load_job

log = logging.getLogger(__name__)


class Flux1AnimationPipeline:
    """Keeps one Ray worker with a resident model across ``generate_animation`` calls (started on
    first use, in an embedded local Ray unless ``RAY_ADDRESS`` names a cluster)."""

    def __init__(self, model: str | Mapping[str, Any], device: str = "cuda", offload: bool = False):
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} but no CUDA GPU is visible; pass device='cpu'")
        self.model = model
        self.device = torch.device(device)
        self.offload = offload  # text encoders stay in CPU memory; only transformer + VAE on the GPU
        self._pool: WorkerPool | None = None

    def _pool_for(self, spec: Any) -> WorkerPool:
        if self._pool is None:
            connect(spec.cluster.address)
            device = None if self.device.type == "cuda" else str(self.device)
            self._pool = WorkerPool(spec.model, 1, device=device, offload=self.offload)
        return self._pool

    def close(self) -> None:
        """Stop the worker (and its resident model)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def generate_animation(
        self,
        prompts: Mapping[int, str] | str,
        motion_params: Mapping[str, Any],
        num_frames: int = 60,
        width: int = 1024,
        height: int = 1024,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        strength: float | str = 0.65,
        fps: int = 24,
        output_path: str | Path | None = None,
        seed: int | None = None,
        callback: Callable[[int, int, torch.Tensor], Any] | None = None,
        noise_mode: str = "fixed",
        noise_delta: float = 0.05,
        noise_scale: float | str = 0.5,
        init_image: str | Path | Any | None = None,
        color_coherence: str | None = None,
        loop: bool = False,
        interpolation: int = 1,
    ) -> str:
        """Render an animation and write it to ``output_path`` (an mp4); returns that path.

        The frames and a resumable render folder (``<stem>-<job_id>/``) are kept beside it.
        """
        if seed is None:
            seed = secrets.randbelow(2**32)
            log.warning("generate_animation: seed=None, using seed %d", seed)
        if output_path is None:
            output_path = f"deforum_{_model_label(self.model)}_{num_frames}f_s{seed}.mp4"
        output_path = Path(output_path)
        with tempfile.TemporaryDirectory(prefix="deforum-ray-init-") as tmp:
            job = {
                "name": re.sub(r"[^A-Za-z0-9._-]+", "_", output_path.stem).strip("._-") or "animation",
                "model": self.model,
                "seed": seed, "width": width, "height": height, "fps": fps,
                "steps": num_inference_steps, "guidance": guidance_scale,
                "strength": strength, "noise_scale": noise_scale, "noise_mode": noise_mode, "noise_delta": noise_delta,
                "color_coherence": color_coherence or "none",
                "motion": dict(motion_params),
                "num_frames": num_frames,
                "prompts": {0: prompts} if isinstance(prompts, str) else dict(prompts),
                "init_image": _init_image_uri(init_image, tmp),
                "post": {"interpolation": interpolation, "loop": loop},
                "output": {"uri": str(output_path.parent.resolve())},
            }
            spec = load_job(job)
            result = render(spec, pool=self._pool_for(spec), progress=True, callback=callback)
            print(result.summary(), file=sys.stderr)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.video, output_path)
        return str(output_path)


def create_flux1_pipeline(device: str = "cuda", offload: bool = False, schnell: bool = False,
                          model: str | Mapping[str, Any] | None = None) -> Flux1AnimationPipeline:
    """A FLUX.1 animation pipeline: ``schnell`` picks FLUX.1-schnell over FLUX.1-dev; ``model`` may
    instead name a preset (``tiny``), a diffusers folder, or a ``.safetensors`` transformer file."""
    preset = "flux1-schnell" if schnell else "flux1-dev"
    if model is None:
        chosen: str | Mapping[str, Any] = preset
    elif isinstance(model, Mapping):
        chosen = dict(model)
    elif str(model).endswith(".safetensors"):
        chosen = {"preset": preset, "transformer": str(model)}
    elif Path(str(model)).expanduser().is_dir():
        chosen = {"source": str(model)}
    else:
        chosen = str(model)
    return Flux1AnimationPipeline(chosen, device=device, offload=offload)


def _model_label(model: str | Mapping[str, Any]) -> str:
    if isinstance(model, Mapping):
        return str(model.get("preset") or Path(str(model.get("source", "custom"))).name)
    return str(model)


def _init_image_uri(init_image: Any, tmp: str) -> str | None:
    """Paths and URIs pass through; a PIL image is saved so the spec can name it."""
    if init_image is None or isinstance(init_image, (str, Path)):
        return None if init_image is None else str(init_image)
    path = Path(tmp) / "init.png"
    init_image.convert("RGB").save(path)
    return str(path)
