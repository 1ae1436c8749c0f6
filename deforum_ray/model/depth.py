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

DEPTH_PRESETS = {"depth-anything-v2-small": "depth-anything/Depth-Anything-V2-Small-hf"}
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

        repo = DEPTH_PRESETS.get(source, source)
        try:
            model = AutoModelForDepthEstimation.from_pretrained(repo, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DepthModelError(f"motion.depth: cannot load depth model {source!r} from a folder or the local "
                                  f"Hugging Face cache ({str(exc).splitlines()[0]}); "
                                  f"run deforum-ray fetch-model {repo}") from None
        model = model.to(device=device, dtype=dtype).eval()
        mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 518
        processor = Path(repo) / "preprocessor_config.json"
        if processor.is_file():
            config = json.loads(processor.read_text())
            mean, std = tuple(config.get("image_mean", mean)), tuple(config.get("image_std", std))
            size = int((config.get("size") or {}).get("height", size))
        patch = int(getattr(model.config, "patch_size", 14))
        return cls(model, torch.device(device), mean, std, patch, size)

    def pixel_values(self, rgb: np.ndarray) -> Tensor:
        """(1, 3, H', W') normalised input: the frame resized so its shorter side is ``size``, each
        side rounded to a multiple of ``patch``."""
        height, width = rgb.shape[:2]
        scale = self.size / min(height, width)
        target = [max(self.patch, round(side * scale / self.patch) * self.patch) for side in (height, width)]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=target, mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(next(self.model.parameters()).dtype)

    @torch.no_grad()
    def latent_depth(self, rgb: np.ndarray, cells: tuple[int, int]) -> Tensor:
        """Distance (float32, on the model's device) of each of the ``cells`` = (h, w) latent cells
        of an RGB frame (H, W, 3, uint8)."""
        predicted = self.model(pixel_values=self.pixel_values(rgb)).predicted_depth.float()  # (1, H', W')
        return disparity_to_distance(F.adaptive_avg_pool2d(predicted[None], cells)[0, 0])


def disparity_to_distance(disparity: Tensor) -> Tensor:
    """Relative inverse depth (larger is nearer) to distances in [NEAREST, FARTHEST]: the largest
    value at NEAREST, the smallest at FARTHEST, linear in between; a flat map is the plane at NEAREST."""
    low, high = disparity.min(), disparity.max()
    if not torch.isfinite(low) or not torch.isfinite(high) or high <= low:
        return torch.full_like(disparity, NEAREST)
    return NEAREST + (FARTHEST - NEAREST) * (high - disparity) / (high - low)
