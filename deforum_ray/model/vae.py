"""FLUX's VAE: 16-channel latents to RGB frames and back."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .compiling import compile_module, decoder_regions, is_compiled
from .denoiser import Acceleration, pad_rows
from .loading import FluxModel

# Pixels per VAE decode call. The decoder's activations take ~0.5 GiB per 512² frame (bench/memory.py
# on an H100: +2.0 GiB for four), enough to lift a bf16 worker past 26 GB; two per call keep most of
# batching's gain.
DECODE_PIXELS = 2 * 512 * 512


@torch.no_grad()
def decode(model: FluxModel, z: Tensor) -> np.ndarray:
    """Latent ``(1, 16, h, w)`` -> RGB ``(8h, 8w, 3)`` uint8."""
    return decode_many(model, [z])[0]


@torch.no_grad()
def decode_many(model: FluxModel, latents: Sequence[Tensor]) -> list[np.ndarray]:
    """Several latents in few VAE calls (:data:`DECODE_PIXELS` each) and one copy to the host (a batch
    of one is :func:`decode`)."""
    return list(decode_on_device(model, latents).permute(0, 2, 3, 1).cpu().numpy())


@torch.no_grad()
def decode_on_device(model: FluxModel, latents: Sequence[Tensor]) -> Tensor:
    """RGB frames ``(B, 3, 8h, 8w)`` uint8 on the model's device, exactly the pixels
    :func:`decode_many` gives (a depth model reads them there)."""
    vae = model.vae
    z = torch.cat([latent.to(model.device, model.dtype) for latent in latents])
    per_call = max(1, DECODE_PIXELS // (z.shape[-2] * z.shape[-1] * 64))
    # A compiled decoder keeps one batch shape (a new one recompiles): short calls are padded.
    rows = per_call if is_compiled(vae.decoder) else 1
    images = torch.cat([vae.decode(pad_rows(part, rows) / vae.config.scaling_factor + vae.config.shift_factor,
                                   return_dict=False)[0][: len(part)]
                        for part in z.split(per_call)])
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def accelerate_decoder(model: FluxModel, options: Acceleration) -> None:
    """Compile the VAE's decoder with the transformer (``cluster.compile``, by the same scope): its
    group norms and activations fuse, which saves time and activation memory; one compile per
    batch shape."""
    if options.compile and not is_compiled(model.vae.decoder):
        mode = "default" if options.compile_mode == "reduce-overhead" else options.compile_mode
        model.vae.decoder = compile_module(model.vae.decoder, decoder_regions(model.vae.decoder),
                                           options.compile_scope, mode)


@torch.no_grad()
def encode(model: FluxModel, rgb: np.ndarray) -> Tensor:
    """RGB ``(H, W, 3)`` uint8 -> latent ``(1, 16, H/8, W/8)`` on the CPU (the distribution's mode:
    deterministic, unlike a sample)."""
    vae = model.vae
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    latent = vae.encode(image.to(model.device, model.dtype)).latent_dist.mode()
    return ((latent - vae.config.shift_factor) * vae.config.scaling_factor).float().cpu()
