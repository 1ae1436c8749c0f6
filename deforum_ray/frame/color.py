"""Colour coherence: move a frame's per-channel statistics to a reference's.

Works on any ``(B, C, H, W)`` tensor: the 16 latent channels (cheap, no decode) or RGB.
"""

from __future__ import annotations

from torch import Tensor


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-item, per-channel mean and standard deviation over the spatial dimensions."""
    flat = x.reshape(x.shape[0], x.shape[1], -1).float()
    return flat.mean(-1), flat.std(-1, unbiased=False)


def match_channel_stats(x: Tensor, reference: Tensor, eps: float = 1e-6) -> Tensor:
    """``x`` with each channel's mean and std set to the reference's."""
    mean_x, std_x = channel_stats(x)
    mean_r, std_r = channel_stats(reference)
    scale = (std_r / std_x.clamp_min(eps))[..., None, None]
    out = (x.float() - mean_x[..., None, None]) * scale + mean_r[..., None, None]
    return out.to(x.dtype)
