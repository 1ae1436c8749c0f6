"""The sequential latent loop over one chain of frames (DESIGN.md section 2).

Frame n > first: warp z_{n-1} by the frame's motion, mix in noise at t_k, run the Euler steps
k ... steps-1, match colour statistics on the latent that is carried forward, decode. The whole
loop state is :class:`LoopState` (latent, previous noise, colour reference, frame index): a few
small tensors, so a checkpoint of it resumes the chain bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from .color import match_channel_stats
from .models import VAE_SCALE, FluxModel
from .motion import motion_matrix, warp
from .noise import frame_noise
from .prompts import TextEmbedding, embedding_at
from .sampling import denoise, get_schedule, image_seq_len, latent_image_ids, mix_noise, pack, start_index, unpack
from .schedule import parse_schedule
from .spec import ClipSpec


@dataclass(frozen=True)
class FrameSchedules:
    """Every per-frame value of a clip, evaluated once from its schedule strings."""

    strength: np.ndarray
    noise_scale: np.ndarray
    subseed_strength: np.ndarray
    zoom: np.ndarray
    angle: np.ndarray
    translation_x: np.ndarray
    translation_y: np.ndarray

    @classmethod
    def of(cls, clip: ClipSpec) -> "FrameSchedules":
        def values(text: str) -> np.ndarray:
            return parse_schedule(text, clip.num_frames, seed=clip.seed)

        m = clip.motion
        return cls(values(clip.strength), values(clip.noise_scale), values(clip.subseed_strength),
                   values(m.zoom), values(m.angle), values(m.translation_x), values(m.translation_y))

    def motion(self, frame: int) -> np.ndarray:
        return motion_matrix(self.zoom[frame], self.angle[frame], self.translation_x[frame], self.translation_y[frame])


@dataclass
class LoopState:
    """What frame ``frame`` needs from the frames before it. Tensors live on the CPU in float32."""

    frame: int = 0
    latent: Tensor | None = None  # z_{frame-1}
    noise: Tensor | None = None  # eps_{frame-1} (the slerp walk)
    color_ref: Tensor | None = None  # the colour-coherence reference latent

    def tensors(self) -> dict[str, Tensor]:
        out = {"frame": torch.tensor([self.frame], dtype=torch.int64)}
        for name in ("latent", "noise", "color_ref"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "LoopState":
        return cls(int(tensors["frame"][0]), tensors.get("latent"), tensors.get("noise"), tensors.get("color_ref"))


@dataclass
class Chain:
    """Everything fixed over one chain: the model, the clip, its schedules and prompt embeddings."""

    model: FluxModel
    clip: ClipSpec
    width: int
    height: int
    embeddings: Mapping[str, TextEmbedding]
    init_latent: Tensor | None = None  # first frame from an init image (CPU, float32)
    schedules: FrameSchedules = field(init=False)
    timesteps: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.schedules = FrameSchedules.of(self.clip)
        self.timesteps = get_schedule(self.clip.steps, image_seq_len(self.height, self.width), self.model.shift_timesteps)
        self.latent_h, self.latent_w = self.height // VAE_SCALE, self.width // VAE_SCALE
        device = self.model.device
        self._img_ids = latent_image_ids(self.latent_h, self.latent_w, device, self.model.dtype)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, self.model.latent_channels, self.latent_h, self.latent_w)

    # -- one frame ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, state: LoopState) -> tuple[LoopState, Tensor]:
        """Render frame ``state.frame``; returns the next state and the frame's latent z_n."""
        n, clip, sched = state.frame, self.clip, self.schedules
        eps = frame_noise(clip.noise_mode, self.latent_shape, clip.seed, clip.name, n, prev=state.noise,
                          subseed=clip.subseed, subseed_strength=float(sched.subseed_strength[n]),
                          delta=clip.noise_delta)
        if n == 0 and self.init_latent is None:
            start, x = 0, eps  # text-to-image: every step, from pure noise
        else:
            base = self.init_latent if n == 0 else warp(state.latent, sched.motion(n), clip.motion.interpolation,
                                                         clip.motion.padding)
            start = start_index(clip.steps, float(sched.strength[n]))
            x = mix_noise(base, eps, self.timesteps[start], float(sched.noise_scale[n]))
        z = self._denoise(x, start, embedding_at(clip.prompts, self.embeddings, n))
        color_ref = state.color_ref
        if clip.color_coherence != "none" and n > 0:
            reference = state.color_ref if clip.color_coherence == "match_first" else state.latent
            z = match_channel_stats(z, reference)  # on the latent carried forward, not only the picture
        if clip.color_coherence == "match_first" and n == 0:
            color_ref = z
        return LoopState(n + 1, z, eps, color_ref), z

    def _denoise(self, x: Tensor, start: int, text: TextEmbedding) -> Tensor:
        model = self.model
        device, dtype = model.device, model.dtype
        tokens, pooled = text.tokens[None].to(device, dtype), text.pooled[None].to(device, dtype)
        txt_ids = torch.zeros(tokens.shape[1], 3, device=device, dtype=dtype)
        guidance = (torch.full((1,), self.clip.guidance, device=device, dtype=torch.float32)
                    if model.guidance_embeds else None)

        def velocity(packed: Tensor, t: float) -> Tensor:
            v = model.transformer(hidden_states=packed.to(dtype), encoder_hidden_states=tokens, pooled_projections=pooled,
                                  timestep=torch.full((1,), t, device=device, dtype=dtype), img_ids=self._img_ids,
                                  txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]
            return v.float()  # Euler steps accumulate in float32

        packed = pack(x.to(device=device, dtype=torch.float32))
        out = denoise(velocity, packed, self.timesteps, start)
        return unpack(out, self.latent_h, self.latent_w).cpu()

    # -- a run of frames ----------------------------------------------------------------------
    def run(self, state: LoopState, stop: int, on_frame: Callable[[int, np.ndarray, LoopState], Any]) -> LoopState:
        """Render frames ``state.frame ... stop - 1``, handing each decoded RGB frame to ``on_frame``."""
        while state.frame < stop:
            frame = state.frame
            state, z = self.step(state)
            on_frame(frame, decode(self.model, z), state)
        return state


@torch.no_grad()
def decode(model: FluxModel, z: Tensor) -> np.ndarray:
    """Latent ``(1, 16, h, w)`` -> RGB ``(8h, 8w, 3)`` uint8."""
    vae = model.vae
    scaled = z.to(model.device, model.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    image = vae.decode(scaled, return_dict=False)[0]
    rgb = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rgb.permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def encode(model: FluxModel, rgb: np.ndarray) -> Tensor:
    """RGB ``(H, W, 3)`` uint8 -> latent ``(1, 16, H/8, W/8)`` on the CPU (the distribution's mode:
    deterministic, unlike a sample)."""
    vae = model.vae
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    latent = vae.encode(image.to(model.device, model.dtype)).latent_dist.mode()
    return ((latent - vae.config.shift_factor) * vae.config.scaling_factor).float().cpu()


def load_image(uri: str, width: int, height: int) -> np.ndarray:
    """An RGB image from a path or fsspec URI, resized to the frame size."""
    import fsspec
    from PIL import Image

    with fsspec.open(uri, "rb") as handle:
        image = Image.open(handle).convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.LANCZOS)
    return np.asarray(image)
