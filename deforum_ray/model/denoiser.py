"""The one place FLUX's transformer is called.

Each worker builds one :class:`Denoiser` from its model (``FluxModel.denoiser``) and every frame
of every chain it renders is denoised through :meth:`Denoiser.velocity`, a batch at a time. That
is the seam where ``torch.compile``, fp8 weights and CUDA graphs wrap the transformer (Step 10)
without the loop knowing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

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
    compile_cache: str | None = None  # Inductor's cache folder; None: torch's own (/tmp/torchinductor_<user>)

    @classmethod
    def of(cls, cluster: Any) -> "Acceleration":
        return cls(bool(cluster.compile), str(cluster.compile_mode), cluster.compile_cache)


class Denoiser:
    """FLUX's velocity field ``v(x, t, text)`` for a batch of packed latents."""

    def __init__(self, model: "FluxModel"):
        self.transformer = model.transformer
        self.device, self.dtype = model.device, model.dtype
        self.guidance_embeds = model.guidance_embeds
        self.compiled = False

    def accelerate(self, options: Acceleration) -> None:
        """Wrap the transformer as ``options`` say; call once, before the first frame. Compiling is
        lazy: each new batch size and resolution compiles on its first call (Inductor's cache
        folder makes a second start of a worker warm)."""
        if options.compile and not self.compiled:
            if options.compile_cache:
                # Read by Inductor when it first compiles; FX graphs, kernels and autotuning all go there.
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.expanduser(options.compile_cache)
            # Shapes are static per (batch, resolution): a few variants per worker, each compiled once.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self.transformer = torch.compile(self.transformer, mode=options.compile_mode, dynamic=False)
            self.compiled = True

    @torch.no_grad()
    def velocity(self, x: Tensor, t: float, text: TextEmbedding, img_ids: Tensor,
                 guidance: Tensor | None = None) -> Tensor:
        """``x``: ``(B, HW/4, 64)`` packed latents at time ``t``; ``text``: a batch of B embeddings;
        ``img_ids``: the latents' positions (:func:`~deforum_ray.frame.sampling.latent_image_ids`);
        ``guidance``: ``(B,)`` distilled guidance scales, used only by models that embed it.
        Returns the velocity ``(B, HW/4, 64)`` in float32."""
        device, dtype = self.device, self.dtype
        tokens = text.tokens.to(device, dtype)
        txt_ids = torch.zeros(tokens.shape[1], 3, device=device, dtype=dtype)
        v = self.transformer(hidden_states=x.to(device, dtype), encoder_hidden_states=tokens,
                             pooled_projections=text.pooled.to(device, dtype),
                             timestep=torch.full((x.shape[0],), t, device=device, dtype=dtype),
                             img_ids=img_ids.to(device, dtype), txt_ids=txt_ids,
                             guidance=guidance if self.guidance_embeds else None, return_dict=False)[0]
        return v.float()
