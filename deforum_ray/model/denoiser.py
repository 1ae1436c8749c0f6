"""The one place FLUX's transformer is called.

Each worker builds one :class:`Denoiser` from its model (``FluxModel.denoiser``) and every frame
of every chain it renders is denoised through :meth:`Denoiser.velocity`, a batch at a time. That
is the seam where ``torch.compile`` (:mod:`.compiling`), fp8 weights and CUDA graphs wrap the
transformer without the loop knowing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..job.inputs import local_path
from .compiling import compile_module, transformer_regions

if TYPE_CHECKING:
    from .loading import FluxModel


@dataclass(frozen=True)
class TextEmbedding:
    """A prompt as the transformer reads it; a batch when the tensors have a leading batch dim."""

    tokens: Tensor  # (L, D) T5 hidden states
    pooled: Tensor  # (P,) CLIP pooled vector

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TextEmbedding":
        return TextEmbedding(self.tokens.to(device=device, dtype=dtype), self.pooled.to(device=device, dtype=dtype))


@dataclass(frozen=True)
class Acceleration:
    """How a worker runs its transformer (the spec's ``cluster.compile*``): results on the CPU and
    with everything off are exactly the plain module's."""

    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode: default | max-autotune-no-cudagraphs | reduce-overhead
    # Inductor's cache folder, or any store URI for portable artifacts (render.compile_cache); None: torch's own
    compile_cache: str | None = None
    batch: int = 1  # compiled: every transformer call is padded to at least this batch (chains_per_worker)
    compile_scope: str = "blocks"  # blocks: each repeated block compiled once and reused; model: the whole module

    @classmethod
    def of(cls, cluster: Any) -> "Acceleration":
        return cls(bool(cluster.compile), str(cluster.compile_mode), cluster.compile_cache,
                   int(cluster.chains_per_worker), str(cluster.compile_scope))


def pad_rows(batch: Tensor, rows: int) -> Tensor:
    """``batch`` with its last row repeated up to ``rows`` rows (unchanged when it has as many)."""
    missing = rows - batch.shape[0]
    return batch if missing <= 0 else torch.cat([batch, batch[-1:].expand(missing, *batch.shape[1:])])


class Denoiser:
    """FLUX's velocity field ``v(x, t, text)`` for a batch of packed latents."""

    def __init__(self, model: "FluxModel"):
        self.transformer = model.transformer
        self.device, self.dtype = model.device, model.dtype
        self.guidance_embeds = model.guidance_embeds
        self.compiled = False
        # A compiled transformer recompiles for each new batch size (~10 s from a warm cache, minutes
        # cold), and a worker meets many: a lone anchor chain, a clip's first frame joining late, the
        # tail of a call. Padding every call to one size keeps one graph; a padded row costs a
        # fraction of a recompile, and rows never mix (per-row products, per-sample attention).
        self.batch = 1

    def accelerate(self, options: Acceleration) -> None:
        """Compile the transformer as ``options`` say (:mod:`.compiling`); call once, before the
        first frame. Compiling is lazy: each new batch size and resolution compiles on its first
        call (Inductor's cache folder makes a second start of a worker warm)."""
        if options.compile and not self.compiled:
            folder = local_path(options.compile_cache) if options.compile_cache else None
            if folder is not None:
                # Read by Inductor when it first compiles; FX graphs, kernels and autotuning all go there.
                # A remote compile_cache holds portable artifacts instead (render.compile_cache).
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
            self.transformer = compile_module(self.transformer, transformer_regions(self.transformer),
                                              options.compile_scope, options.compile_mode)
            self.compiled = True
            self.batch = max(1, options.batch)

    @torch.no_grad()
    def velocity(self, x: Tensor, t: float, text: TextEmbedding, img_ids: Tensor,
                 guidance: Tensor | None = None) -> Tensor:
        """``x``: ``(B, HW/4, 64)`` packed latents at time ``t``; ``text``: a batch of B embeddings;
        ``img_ids``: the latents' positions (:func:`~deforum_ray.frame.sampling.latent_image_ids`);
        ``guidance``: ``(B,)`` distilled guidance scales, used only by models that embed it.
        Returns the velocity ``(B, HW/4, 64)`` in float32."""
        device, dtype = self.device, self.dtype
        rows, padded = x.shape[0], max(x.shape[0], self.batch)
        tokens = pad_rows(text.tokens.to(device, dtype), padded)
        txt_ids = torch.zeros(tokens.shape[1], 3, device=device, dtype=dtype)
        if guidance is not None and self.guidance_embeds:
            guidance = pad_rows(guidance, padded)
        v = self.transformer(hidden_states=pad_rows(x.to(device, dtype), padded), encoder_hidden_states=tokens,
                             pooled_projections=pad_rows(text.pooled.to(device, dtype), padded),
                             timestep=torch.full((padded,), t, device=device, dtype=dtype),
                             img_ids=img_ids.to(device, dtype), txt_ids=txt_ids,
                             guidance=guidance if self.guidance_embeds else None, return_dict=False)[0]
        return v[:rows].float()
