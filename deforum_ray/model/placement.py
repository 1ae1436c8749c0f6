"""Putting FLUX's transformer on its device one block at a time.

A worker loads its transformer *off* the device (real weights in CPU memory; ``random:`` weights
as shapes on the meta device), embeds the job's prompts with the text encoders on the device,
frees them, and only then places the transformer: block by block, each block made (random
weights, initialised from the model's seed) or moved (loaded weights), then cast to fp8 when
``model.precision`` asks. So the device never holds T5-XXL and the transformer at once, nor more
bf16 than one block beyond the finished transformer: the worker's peak is the transformer at its
own precision (about 24 GB bf16, 12 GB fp8) plus what a frame needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .fp8 import BLOCKS, block_to_fp8


@dataclass(frozen=True)
class Placement:
    """What :func:`place` does to a transformer that is not on its device yet."""

    precision: str = "bf16"  # bf16 | fp8 (the blocks' Linear layers)
    seed: int | None = None  # weights on the meta device: initialised from this seed as they are made


def units(transformer: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The transformer's parts in a fixed order: each block apart, the rest as top-level children."""
    for name, child in transformer.named_children():
        if name in BLOCKS:
            for i, block in enumerate(child):
                yield f"{name}.{i}", block
        else:
            yield name, child


def place(transformer: nn.Module, device: torch.device, dtype: torch.dtype, placement: Placement) -> int:
    """Move (or make) ``transformer`` on ``device`` in ``dtype``, in place, one unit at a time,
    with fp8 applied to each block as it arrives. Returns how many Linear layers became fp8."""
    if list(transformer.parameters(recurse=False)) or list(transformer.buffers(recurse=False)):
        raise ValueError("the transformer holds tensors of its own; place() moves its children only")
    fp8, devices = 0, [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # a seeded build never moves the caller's RNG
        if placement.seed is not None:
            torch.manual_seed(placement.seed)
        for name, unit in units(transformer):
            if any(p.is_meta for p in unit.parameters()):
                if placement.seed is None:
                    raise ValueError(f"transformer.{name} has no weights and no seed to make them from")
                _make(unit, device)
            unit.to(device=device, dtype=dtype)
            if placement.precision == "fp8" and name.startswith(BLOCKS):
                fp8 += block_to_fp8(unit)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return fp8


def _make(unit: nn.Module, device: torch.device) -> None:
    """Random weights for a unit built on the meta device, as its layers' own constructors make them
    (every parametrised layer of FLUX, Linear and RMSNorm, has ``reset_parameters``)."""
    unit.to_empty(device=device)
    with torch.no_grad():
        for module in unit.modules():
            if list(module.parameters(recurse=False)):
                module.reset_parameters()
