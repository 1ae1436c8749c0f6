"""Flow-matching img2img for FLUX.1 as small pure functions (after black-forest-labs/flux).

Timesteps run from 1 (noise) to 0 (clean). A frame starts at index ``k`` of the schedule, mixes
noise in at ``t_k`` and runs the Euler steps ``k ... steps-1``: ``steps - k`` transformer passes.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..job.frames import start_indices

Velocity = Callable[[Tensor, float], Tensor]  # (packed x, t) -> predicted velocity, same shape as x


def time_shift(mu: float, t: Tensor) -> Tensor:
    """FLUX.1-dev's resolution shift ``t -> e^mu / (e^mu + (1/t - 1))``; keeps 0 and 1 fixed."""
    shifted = math.exp(mu) / (math.exp(mu) + (1.0 / t.clamp_min(1e-12) - 1.0))
    return torch.where(t > 0, shifted, torch.zeros_like(t))


def shift_mu(image_seq_len: int, base_len: int = 256, max_len: int = 4096,
             base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """``mu`` linear in the packed token count: 256 tokens -> 0.5, 4096 tokens -> 1.15."""
    slope = (max_shift - base_shift) / (max_len - base_len)
    return base_shift + slope * (image_seq_len - base_len)


def get_schedule(steps: int, image_seq_len: int, shift: bool) -> list[float]:
    """``steps + 1`` timesteps from 1 to 0; schnell unshifted, dev shifted by sequence length."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if shift:
        t = time_shift(shift_mu(image_seq_len), t)
    return t.tolist()


def image_seq_len(height: int, width: int, vae_scale: int = 8) -> int:
    """Packed tokens for a frame: one per 2x2 patch of latent cells."""
    return (height // (vae_scale * 2)) * (width // (vae_scale * 2))


def start_index(steps: int, strength: float) -> int:
    """img2img start ``k = round(steps * (1 - strength))``, halves rounded up."""
    return int(start_indices(np.array([strength]), steps)[0])


def mix_noise(z: Tensor, noise: Tensor, t: float, noise_scale: float = 1.0) -> Tensor:
    """``(1 - t) z + t * noise_scale * eps``: the flow-matching point at time t (scale 1 is exact)."""
    return (1.0 - t) * z + (t * noise_scale) * noise


def euler_step(x: Tensor, v: Tensor, t: float, t_next: float) -> Tensor:
    return x + (t_next - t) * v


def denoise(velocity: Velocity, x: Tensor, timesteps: list[float], start: int) -> Tensor:
    """Euler steps ``start ... len(timesteps) - 2``: one velocity call each."""
    for t, t_next in zip(timesteps[start:-1], timesteps[start + 1 :]):
        x = euler_step(x, velocity(x, t), t, t_next)
    return x


def pack(z: Tensor) -> Tensor:
    """``(B, C, H, W)`` latent -> ``(B, H/2 * W/2, 4C)`` tokens of 2x2 patches."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`pack` for a latent of ``height x width`` cells."""
    b, _, d = x.shape
    c = d // 4
    return x.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


def latent_image_ids(height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """FLUX's positional ids ``(H/2 * W/2, 3)``: (0, row, col) for each packed token."""
    ids = torch.zeros(height // 2, width // 2, 3, dtype=dtype, device=device)
    ids[..., 1] = torch.arange(height // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(width // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)
