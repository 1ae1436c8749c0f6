"""Depth for 3D motion: a ``transformers`` depth estimator (Depth Anything V2 by default), loaded
once per worker, run on a decoded frame, its output reduced to the latent grid as distances.

Depth Anything predicts relative inverse depth (larger is nearer) at the resolution it is given.
:meth:`DepthModel.latent_depth` averages it over each latent cell, scales it to [0, 1] over the
frame and maps it to a distance along the view axis in [1, 2]: the nearest cell at 1 (where
``depth: none`` puts the whole picture, so the camera's units mean the same), the farthest at 2.
A frame the model sees as flat is the plane at 1. Weights come from a folder or the Hugging Face
cache, never downloaded here (``deforum-ray fetch-model`` fetches them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..job.choices import DEPTH_PRESETS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NEAREST, FARTHEST = 1.0, 2.0  # distances the depth map is scaled to


class DepthModelError(RuntimeError):
    """A depth model that cannot be loaded: one line naming it."""


@dataclass
class DepthModel:
    model: Any  # a transformers model with ``predicted_depth`` in its output
    device: torch.device
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    patch: int = 14  # the input sides are multiples of it
    size: int = 518  # the input's shorter side, as the model was trained

    @classmethod
    def load(cls, source: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "DepthModel":
        """A preset name, a folder or a Hugging Face repo id (from the local cache only)."""
        from transformers import AutoModelForDepthEstimation

        from .fetch import DEPTH_FILES, cached_snapshot

        repo = DEPTH_PRESETS.get(source, source)
        hint = source if source in DEPTH_PRESETS else f"--depth {repo}"
        local = Path(repo).expanduser()
        folder = str(local) if local.is_dir() else cached_snapshot(repo, DEPTH_FILES)
        if folder is None:
            raise DepthModelError(f"motion.depth: depth model {source!r} is neither a folder nor in the local "
                                  f"Hugging Face cache; run deforum-ray fetch-model {hint}")
        try:
            model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DepthModelError(f"motion.depth: cannot load depth model {source!r} from {folder!r} "
                                  f"({str(exc).splitlines()[0]}); run deforum-ray fetch-model {hint}") from None
        model = model.to(device=device, dtype=dtype).eval()
        mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 518
        processor = Path(folder) / "preprocessor_config.json"
        if processor.is_file():
            config = json.loads(processor.read_text())
            mean, std = tuple(config.get("image_mean", mean)), tuple(config.get("image_std", std))
            size = int((config.get("size") or {}).get("height", size))
        patch = int(getattr(model.config, "patch_size", 14))
        return cls(model, torch.device(device), mean, std, patch, size)

    def pixel_values(self, rgb: np.ndarray | Tensor) -> Tensor:
        """(B, 3, H', W') normalised input of frames (an (H, W, 3) uint8 array, or (B, 3, H, W)
        uint8 on any device): resized so the shorter side is ``size``, each side rounded to a
        multiple of ``patch``."""
        if isinstance(rgb, np.ndarray):
            rgb = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        height, width = rgb.shape[-2:]
        scale = self.size / min(height, width)
        target = [max(self.patch, round(side * scale / self.patch) * self.patch) for side in (height, width)]
        x = rgb.to(self.device).float() / 255.0
        x = F.interpolate(x, size=target, mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(next(self.model.parameters()).dtype)

    def latent_depth(self, rgb: np.ndarray | Tensor, cells: tuple[int, int]) -> Tensor:
        """Distance (float32, on the model's device) of each of the ``cells`` = (h, w) latent cells
        of one RGB frame (see :meth:`pixel_values`)."""
        return self.latent_depths(rgb, cells)[0]

    @torch.no_grad()
    def latent_depths(self, rgb: np.ndarray | Tensor, cells: tuple[int, int]) -> Tensor:
        """(B, h, w) distances of a batch of frames, in one pass of the model; each frame scaled on its own."""
        predicted = self.model(pixel_values=self.pixel_values(rgb)).predicted_depth.float()  # (B, H', W')
        pooled = F.adaptive_avg_pool2d(predicted[:, None], cells)[:, 0]
        return torch.stack([disparity_to_distance(frame) for frame in pooled])


def disparity_to_distance(disparity: Tensor) -> Tensor:
    """Relative inverse depth (larger is nearer) to distances in [NEAREST, FARTHEST]: the largest
    value at NEAREST, the smallest at FARTHEST, linear in between; a flat map is the plane at NEAREST."""
    low, high = disparity.min(), disparity.max()
    if not torch.isfinite(low) or not torch.isfinite(high) or high <= low:
        return torch.full_like(disparity, NEAREST)
    return NEAREST + (FARTHEST - NEAREST) * (high - disparity) / (high - low)
