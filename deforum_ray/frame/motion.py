"""2D motion of a latent about the frame centre: one affine grid and ``grid_sample``.

Deforum's 2D convention (cv2.getRotationMatrix2D then a translation): zoom > 1 zooms in, angle
in degrees > 0 turns the picture counter-clockwise, translation_x/y in output pixels > 0 moves
the content right/down. The forward map ``dst = M @ src`` is built in centred *pixel* units, so
rotation is a true rotation on non-square frames (no shear), per-frame matrices compose by
multiplication, and translations are exact at any sub-pixel size (never rounded to cells).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..job.choices import PADDINGS, WARP_INTERPOLATIONS


def motion_matrix(zoom: float, angle: float, translation_x: float, translation_y: float) -> np.ndarray:
    """3x3 forward map in centred pixel coordinates (x right, y down): ``dst = M @ src``."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.array(
        [[zoom * c, zoom * s, translation_x],
         [-zoom * s, zoom * c, translation_y],
         [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def grid_theta(matrix: np.ndarray, height: int, width: int, vae_scale: int = 8) -> Tensor:
    """``affine_grid`` theta (2x3, float64) for a ``height x width``-cell latent: for each output
    location, where to sample the input, in normalised coordinates (align_corners=False)."""
    inverse = np.linalg.inv(matrix)
    a_inv, t = inverse[:2, :2], matrix[:2, 2] / vae_scale  # translation in latent cells
    half = np.diag([width / 2.0, height / 2.0])  # normalised -> centred cell units
    half_inv = np.diag([2.0 / width, 2.0 / height])
    linear = half_inv @ a_inv @ half
    offset = -half_inv @ a_inv @ t
    return torch.from_numpy(np.concatenate([linear, offset[:, None]], axis=1))


def warp(z: Tensor, matrix: np.ndarray, interpolation: str = "bicubic", padding: str = "reflection",
         vae_scale: int = 8) -> Tensor:
    """Warp ``(B, C, H, W)`` latents by a forward motion matrix (the same for every item)."""
    if interpolation not in WARP_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {WARP_INTERPOLATIONS}, got {interpolation!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    b, c, h, w = z.shape
    # Sample in float64 whatever the model dtype: float32 pixel coordinates near 128 cells are only
    # good to ~1e-5 of a cell, and a latent is small enough that float64 costs nothing noticeable.
    theta = grid_theta(matrix, h, w, vae_scale).to(device=z.device, dtype=torch.float64)
    grid = F.affine_grid(theta.expand(b, 2, 3), [b, c, h, w], align_corners=False)
    out = F.grid_sample(z.double(), grid, mode=interpolation, padding_mode=padding, align_corners=False)
    return out.to(z.dtype)


def compose(matrices: Iterable[np.ndarray]) -> np.ndarray:
    """The one forward map equal to applying ``matrices`` in order, the first one first.

    Motion accumulated over many frames is this product of the per-frame maps, exactly: zoom,
    rotation and translation do not commute, so summing schedule values would be wrong."""
    out = np.eye(3, dtype=np.float64)
    for matrix in matrices:
        out = np.asarray(matrix, dtype=np.float64) @ out
    return out
