"""FLUX's VAE: 16-channel latents to RGB frames and back."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .loading import FluxModel


@torch.no_grad()
def decode(model: FluxModel, z: Tensor) -> np.ndarray:
    """Latent ``(1, 16, h, w)`` -> RGB ``(8h, 8w, 3)`` uint8."""
    return decode_many(model, [z])[0]


@torch.no_grad()
def decode_many(model: FluxModel, latents: Sequence[Tensor]) -> list[np.ndarray]:
    """Several latents in one VAE call and one copy to the host (a batch of one is :func:`decode`)."""
    vae = model.vae
    z = torch.cat([latent.to(model.device, model.dtype) for latent in latents])
    images = vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
    rgb = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(rgb.permute(0, 2, 3, 1).cpu().numpy())


@torch.no_grad()
def encode(model: FluxModel, rgb: np.ndarray) -> Tensor:
    """RGB ``(H, W, 3)`` uint8 -> latent ``(1, 16, H/8, W/8)`` on the CPU (the distribution's mode:
    deterministic, unlike a sample)."""
    vae = model.vae
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    latent = vae.encode(image.to(model.device, model.dtype)).latent_dist.mode()
    return ((latent - vae.config.shift_factor) * vae.config.scaling_factor).float().cpu()
