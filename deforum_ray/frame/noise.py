"""Per-frame noise, derived only from ``(seed, clip, frame)``: never the global RNG.

Modes: ``fixed`` the same eps on every frame; ``incremental`` a fresh eps from seed + n;
``subseed`` a slerp between the noise of ``seed`` and of ``subseed`` by a scheduled strength;
``slerp`` a random walk on the sphere, eps_n = slerp(eps_{n-1}, fresh_n, noise_delta).
Noise is drawn on the CPU in float32, so a frame's noise is the same on every machine.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor

from ..job.choices import NOISE_MODES


def derive_seed(*parts: int | str) -> int:
    """A 63-bit generator seed from any parts, stable across processes and Python versions."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def gaussian(shape: Sequence[int], seed: int) -> Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def slerp(a: Tensor, b: Tensor, t: float, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation per batch item; keeps the norm of unit-variance noise."""
    flat_a, flat_b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1)).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    near = sin.abs() < eps  # (anti)parallel: fall back to a straight line
    wa = torch.where(near, torch.full_like(omega, 1.0 - t), torch.sin((1.0 - t) * omega) / sin.clamp_min(eps))
    wb = torch.where(near, torch.full_like(omega, t), torch.sin(t * omega) / sin.clamp_min(eps))
    out = wa[:, None] * flat_a + wb[:, None] * flat_b
    return out.reshape(a.shape).to(a.dtype)


def frame_noise(
    mode: str,
    shape: Sequence[int],
    seed: int,
    clip: str,
    frame: int,
    *,
    prev: Tensor | None = None,
    subseed: int = 0,
    subseed_strength: float = 0.0,
    delta: float = 0.1,
) -> Tensor:
    """eps for ``frame`` of ``clip``. ``prev`` (slerp mode) is the previous frame's eps."""
    if mode == "fixed":
        return gaussian(shape, derive_seed(seed, clip))
    if mode == "incremental":
        return gaussian(shape, derive_seed(seed + frame, clip))
    if mode == "subseed":
        base = gaussian(shape, derive_seed(seed, clip))
        if subseed_strength == 0.0:
            return base
        return slerp(base, gaussian(shape, derive_seed(subseed, clip)), subseed_strength)
    if mode == "slerp":
        if frame == 0 or prev is None:
            return gaussian(shape, derive_seed(seed, clip))
        return slerp(prev, gaussian(shape, derive_seed(seed, clip, frame)), delta)
    raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
