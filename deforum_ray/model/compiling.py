"""``torch.compile`` by region: each kind of repeated block is compiled once and reused.

FLUX's transformer is 19 double blocks and 38 single blocks of two classes; compiled whole, its
first call traces and lowers all 57 (74.5 s on an H200, Step 18's issue). Compiled block by block
(``nn.Module.compile`` on each, as diffusers' ``compile_repeated_blocks`` does), Dynamo traces one
graph per block class and shape and every other block of the class reuses it: its parameters are
the graph's inputs (``inline_inbuilt_nn_modules``), not constants. The glue between blocks (the
embedders, the final norm and projection) runs eagerly; it is a small share of a pass. The VAE
decoder is compiled the same way, resnet by resnet and its attention.

``cluster.compile_scope`` chooses: ``blocks`` (this) or ``model`` (the whole module, as before),
so ``bench/compile_start.py`` can measure both in one run.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

TRANSFORMER_REGIONS = ("transformer_blocks", "single_transformer_blocks")  # FluxTransformer2DModel's block lists
DECODER_REGIONS = ("ResnetBlock2D", "Attention")  # the decoder's repeated layers, by class name


def transformer_regions(transformer: nn.Module) -> list[nn.Module]:
    """The transformer's repeated blocks, double then single, in order."""
    return [block for group in TRANSFORMER_REGIONS for block in getattr(transformer, group, [])]


def decoder_regions(decoder: nn.Module) -> list[nn.Module]:
    """The decoder's resnets and attention layers (those of its mid block and up blocks)."""
    return [module for module in decoder.modules() if type(module).__name__ in DECODER_REGIONS]


def compile_in_place(modules: Iterable[nn.Module], mode: str, backend: str = "inductor") -> int:
    """``module.compile()`` each (its call is replaced in place; the module, its name and its
    state dict stay). Shapes are static per (batch, resolution). Returns how many."""
    count = 0
    for module in modules:
        module.compile(**_options(mode, backend))
        count += 1
    return count


def _options(mode: str, backend: str) -> dict:
    # A mode is Inductor's; another backend (``eager`` traces without compiling: tests) takes none.
    return {"mode": mode, "dynamic": False} if backend == "inductor" else {"backend": backend, "dynamic": False}


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` runs compiled code: it was wrapped whole, or it or a part of it was
    compiled in place."""
    if isinstance(module, torch._dynamo.eval_frame.OptimizedModule):
        return True
    return any(getattr(part, "_compiled_call_impl", None) is not None for part in module.modules())


def compile_module(module: nn.Module, regions: list[nn.Module], scope: str, mode: str,
                   backend: str = "inductor") -> nn.Module:
    """``module`` compiled as ``scope`` says: ``blocks`` compiles ``regions`` in place and returns
    ``module``; ``model`` returns the whole module wrapped (a new object, as ``torch.compile`` gives)."""
    # Each block class and shape is one graph; a worker meets a few (batch, resolution) variants.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if scope == "blocks" and regions:
        compile_in_place(regions, mode, backend)
        return module
    return torch.compile(module, **_options(mode, backend))
