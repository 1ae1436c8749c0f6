"""The sequential latent loop over chains of frames (DESIGN.md sections 2 and 3).

Frame n > first: warp z_{n-1} by the frame's motion, mix in noise at t_k, run the Euler steps
k ... steps-1, match colour statistics on the latent that is carried forward, decode. The whole
loop state is :class:`LoopState` (latent, previous noise, colour reference, frame index): a few
small tensors, so a checkpoint of it resumes the chain bit-exactly.

Three kinds of chain share that step. A whole clip renders every frame. An *anchor chain* renders
only a clip's anchor frames 0, N, 2N, ...: each is the anchor before it warped by the motion
accumulated over the gap (one matrix, the exact product of the per-frame ones) and re-diffused at
``anchor_strength``. A *segment* starts on its anchor as rendered and eases its last ``blend``
frames toward the next anchor, so segments render in parallel and still meet smoothly.

:func:`advance` moves several chains forward together, one frame each per round, running the
transformer once per Euler step for all of them (``cluster.chains_per_worker``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..job.plan import ChainKind
from ..job.frames import ClipFrames
from ..job.spec import ClipSpec
from ..model.denoiser import TextEmbedding
from ..model.loading import VAE_SCALE, FluxModel
from ..model.vae import decode_many
from .color import match_channel_stats
from .motion import compose, motion_matrix, warp
from .noise import frame_noise
from .prompts import embedding_at
from .sampling import euler_step, get_schedule, image_seq_len, latent_image_ids, mix_noise, pack, start_index, unpack


@dataclass(frozen=True)
class FrameSchedules:
    """Every per-frame value of a clip (:class:`~deforum_ray.job.frames.ClipFrames`, evaluated
    once), and the motion maps they make."""

    frames: ClipFrames

    @classmethod
    def of(cls, clip: ClipSpec) -> "FrameSchedules":
        return cls(ClipFrames.of(clip))

    @property
    def strength(self) -> np.ndarray:
        return self.frames["strength"]

    @property
    def noise_scale(self) -> np.ndarray:
        return self.frames["noise_scale"]

    @property
    def subseed_strength(self) -> np.ndarray:
        return self.frames["subseed_strength"]

    def motion(self, frame: int) -> np.ndarray:
        f = self.frames
        return motion_matrix(f["motion.zoom"][frame], f["motion.angle"][frame], f["motion.translation_x"][frame],
                             f["motion.translation_y"][frame])

    def motion_between(self, earlier: int, later: int) -> np.ndarray:
        """The motion from frame ``earlier`` to frame ``later``: the product of the maps of frames
        ``earlier + 1 ... later`` (for adjacent frames, exactly the later frame's own map)."""
        return compose(self.motion(n) for n in range(earlier + 1, later + 1))


@dataclass
class LoopState:
    """What frame ``frame`` needs from the frames before it, in float32. The latents live on the
    model's device while a chain runs (the loop's math stays there); the noise on the CPU, where it
    is drawn. :meth:`tensors` copies everything to the CPU for a checkpoint."""

    frame: int = 0
    latent: Tensor | None = None  # z_{frame-1}
    noise: Tensor | None = None  # eps_{frame-1} (the slerp walk)
    color_ref: Tensor | None = None  # the colour-coherence reference latent

    def tensors(self) -> dict[str, Tensor]:
        """The state on the CPU, each tensor its own memory (safetensors refuses shared memory: on
        a chain's first frame the colour reference *is* the latent)."""
        out = {"frame": torch.tensor([self.frame], dtype=torch.int64)}
        for name in ("latent", "noise", "color_ref"):
            value = getattr(self, name)
            if value is not None:
                tensor = value.cpu().contiguous()
                if any(tensor.data_ptr() == other.data_ptr() for other in out.values()):
                    tensor = tensor.clone()
                out[name] = tensor
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "LoopState":
        return cls(int(tensors["frame"][0]), tensors.get("latent"), tensors.get("noise"), tensors.get("color_ref"))


def blend_weight(frame: int, next_anchor: int, blend: int) -> float:
    """How far a segment's latent at ``frame`` is eased toward the next anchor: 0 until the last
    ``blend`` frames before it, then rising linearly to ``blend / (blend + 1)`` on the last frame,
    so the step onto the anchor is one more step of the same ramp."""
    ramp = frame - (next_anchor - blend - 1)
    return ramp / (blend + 1) if blend > 0 and 0 < ramp <= blend else 0.0


@dataclass(frozen=True)
class SegmentEnds:
    """A segment's two anchors: it starts on the first, as rendered, and eases toward the next."""

    first: LoopState  # the anchor chain's state after anchor a_i, restarted at frame a_i + 1
    next_anchor: Tensor | None = None  # z at a_{i+1}; None for a clip's last segment
    next_frame: int = 0  # a_{i+1}
    blend: int = 0


@dataclass(frozen=True)
class FrameInput:
    """A frame ready to denoise: its noisy start ``x`` at timestep index ``start``."""

    chain: "Chain"
    frame: int
    x: Tensor  # (1, C, h, w) on the model's device, float32
    start: int
    eps: Tensor
    text: TextEmbedding


@dataclass
class Chain:
    """A whole clip: every frame from the one before. Holds everything fixed over the chain: the
    model, the clip, its schedules and prompt embeddings. :class:`AnchorChain` and
    :class:`SegmentChain` change which frames it visits, at what strength, and what it eases to."""

    kind: ClassVar[ChainKind] = ChainKind.CLIP
    model: FluxModel
    clip: ClipSpec
    width: int
    height: int
    embeddings: Mapping[str, TextEmbedding]
    init_latent: Tensor | None = None  # first frame from an init image (CPU, float32)
    schedules: FrameSchedules = field(init=False)
    timesteps: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.device = self.model.device  # where the loop's latents live and its math runs
        self.schedules = FrameSchedules.of(self.clip)
        self.timesteps = get_schedule(self.clip.steps, image_seq_len(self.height, self.width), self.model.shift_timesteps)
        self.latent_h, self.latent_w = self.height // VAE_SCALE, self.width // VAE_SCALE
        self.img_ids = latent_image_ids(self.latent_h, self.latent_w, self.model.device, self.model.dtype)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, self.model.latent_channels, self.latent_h, self.latent_w)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Chains with equal keys can share a transformer forward."""
        return (id(self.model), tuple(self.timesteps), self.latent_h, self.latent_w)

    # -- what each kind of chain decides ----------------------------------------------------------
    def previous_frame(self, n: int) -> int:
        return n - 1

    def next_frame(self, n: int) -> int:
        return n + 1

    def strength(self, n: int) -> float:
        return float(self.schedules.strength[n])

    def given(self, state: LoopState) -> tuple[LoopState, Tensor] | None:
        """A frame that needs no denoising (a segment's first frame is its anchor)."""
        return None

    def ease(self, n: int, z: Tensor) -> Tensor:
        """Pull a latent toward where the chain must arrive (a segment's next anchor)."""
        return z

    # -- one frame, in two halves around the denoising, so that chains can share it --------------
    def prepare(self, state: LoopState) -> FrameInput:
        """Warp, noise and text for frame ``state.frame``."""
        n, clip, sched = state.frame, self.clip, self.schedules
        eps = frame_noise(clip.noise_mode, self.latent_shape, clip.seed, clip.name, n, prev=state.noise,
                          subseed=clip.subseed, subseed_strength=float(sched.subseed_strength[n]),
                          delta=clip.noise_delta)
        text = embedding_at(clip.prompts, self.embeddings, n)
        noise = eps.to(self.device, non_blocking=True)
        if n == 0 and self.init_latent is None:
            return FrameInput(self, n, noise, 0, eps, text)  # text-to-image: every step, from pure noise
        if n == 0:
            base = self.init_latent.to(self.device)
        else:
            motion = sched.motion_between(self.previous_frame(n), n)
            latent = state.latent.to(self.device)
            base = self.ease(n, warp(latent, motion, clip.motion.interpolation, clip.motion.padding))
        start = start_index(clip.steps, self.strength(n))
        return FrameInput(self, n, mix_noise(base, noise, self.timesteps[start], float(sched.noise_scale[n])), start,
                          eps, text)

    def finish(self, state: LoopState, work: FrameInput, z: Tensor) -> tuple[LoopState, Tensor]:
        """Colour coherence and easing on the denoised latent; the state for the next frame."""
        n, clip = work.frame, self.clip
        color_ref = state.color_ref
        if clip.color_coherence != "none" and n > 0:
            reference = state.color_ref if clip.color_coherence == "match_first" else state.latent
            z = match_channel_stats(z, reference.to(z.device))  # on the latent carried forward, not only the picture
        if clip.color_coherence == "match_first" and n == 0:
            color_ref = z
        z = self.ease(n, z)
        return LoopState(self.next_frame(n), z, work.eps, color_ref), z


@dataclass
class AnchorChain(Chain):
    """A clip's anchor frames 0, N, 2N, ...: each is the anchor before it warped by the motion
    accumulated over the gap and re-diffused at ``anchor_strength``."""

    kind: ClassVar[ChainKind] = ChainKind.ANCHORS
    anchors: tuple[int, ...] = ()

    def previous_frame(self, n: int) -> int:
        return self.anchors[self.anchors.index(n) - 1]

    def next_frame(self, n: int) -> int:
        i = self.anchors.index(n) + 1
        return self.anchors[i] if i < len(self.anchors) else self.clip.num_frames

    def strength(self, n: int) -> float:
        return self.clip.anchor_strength if n > 0 else super().strength(n)


@dataclass
class SegmentChain(Chain):
    """The frames between two anchors: it starts on the first, as rendered, and eases its last
    ``blend`` frames toward the next."""

    kind: ClassVar[ChainKind] = ChainKind.SEGMENT
    ends: SegmentEnds | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ends is None:
            raise ValueError("a SegmentChain needs its SegmentEnds")

    def given(self, state: LoopState) -> tuple[LoopState, Tensor] | None:
        first = self.ends.first
        return (first, first.latent) if state.frame == first.frame - 1 else None

    def ease(self, n: int, z: Tensor) -> Tensor:
        """Near the segment's end, pull ``z`` toward the next anchor. Applied twice per frame: to the
        warped latent before noising, so the frame is denoised from near the anchor and stays a
        clean picture, and to the result, so the chain arrives at the anchor (measured in
        bench/seams.py: together they give smaller seams than either alone)."""
        ends, clip = self.ends, self.clip
        if ends.next_anchor is None:
            return z
        weight = blend_weight(n, ends.next_frame, ends.blend)
        if weight <= 0:
            return z
        # The next anchor as it would look at this frame: its motion from here undone.
        back = np.linalg.inv(self.schedules.motion_between(n, ends.next_frame))
        aligned = warp(ends.next_anchor.to(z.device), back, clip.motion.interpolation, clip.motion.padding)
        return torch.lerp(z, aligned, weight)


@torch.no_grad()
def denoise_together(works: Sequence[FrameInput]) -> list[Tensor]:
    """The Euler steps of several frames, one batched velocity call per step.

    The frames' chains share a model, schedule and size (:attr:`Chain.batch_key`); each frame
    joins at its own start index. A batch of one is exactly the single-chain loop; a larger batch
    differs only by float rounding in the batched matrix products."""
    chain = works[0].chain
    denoiser, timesteps = chain.model.denoiser, chain.timesteps
    device, dtype = denoiser.device, denoiser.dtype
    xs = [pack(w.x.to(device=device, dtype=torch.float32)) for w in works]
    text = TextEmbedding(torch.stack([w.text.tokens for w in works]), torch.stack([w.text.pooled for w in works]))
    text = text.to(device, dtype)
    guidance = torch.tensor([w.chain.clip.guidance for w in works], device=device, dtype=torch.float32)
    for i in range(min(w.start for w in works), len(timesteps) - 1):
        active = [k for k, w in enumerate(works) if w.start <= i]
        pick: list[int] | slice = active if len(active) < len(works) else slice(None)
        t, t_next = timesteps[i], timesteps[i + 1]
        v = denoiser.velocity(torch.cat([xs[k] for k in active]), t, TextEmbedding(text.tokens[pick], text.pooled[pick]),
                              chain.img_ids, guidance[pick])
        for j, k in enumerate(active):
            xs[k] = euler_step(xs[k], v[j : j + 1], t, t_next)  # Euler steps accumulate in float32
    return [unpack(x, chain.latent_h, chain.latent_w) for x in xs]  # stay on the device


@dataclass
class Lane:
    """One chain being advanced by :func:`advance`: where it stands and where its frames go."""

    chain: Chain
    state: LoopState
    stop: int  # the frame it stops before
    on_frame: Callable[..., Any]  # (frame, z, state after it, chains advanced together, picture or None)
    pictures: bool = False  # decode each frame (batched with the lanes it denoised with) for on_frame
    error: BaseException | None = None

    @property
    def active(self) -> bool:
        return self.error is None and self.state.frame < self.stop


def advance(lanes: Sequence[Lane]) -> None:
    """Advance every lane to its stop, one frame per lane per round: the one loop that renders,
    tests and benches all run. Frames whose chains share a batch key denoise together. A lane
    whose frame fails keeps its error and stops; the rest go on."""
    while active := [lane for lane in lanes if lane.active]:
        groups: dict[tuple[Any, ...], list[tuple[Lane, FrameInput]]] = {}
        for lane in active:
            try:
                given = lane.chain.given(lane.state)
                if given is not None:
                    state, z = given
                    _deliver(lane, lane.state.frame, state, z, together=1, picture=_pictures([(lane, z)])[0])
                else:
                    groups.setdefault(lane.chain.batch_key, []).append((lane, lane.chain.prepare(lane.state)))
            except Exception as exc:
                lane.error = exc
        for group in groups.values():
            try:
                latents = denoise_together([work for _, work in group])
            except Exception as exc:
                for lane, _ in group:
                    lane.error = exc
                continue
            finished = []
            for (lane, work), z in zip(group, latents):
                try:
                    finished.append((lane, work.frame, *lane.chain.finish(lane.state, work, z)))
                except Exception as exc:
                    lane.error = exc
            try:
                pictures = _pictures([(lane, z) for lane, _, _, z in finished])
            except Exception as exc:
                for lane, *_ in finished:
                    lane.error = exc
                continue
            for (lane, frame, state, z), picture in zip(finished, pictures):
                try:
                    _deliver(lane, frame, state, z, together=len(group), picture=picture)
                except Exception as exc:
                    lane.error = exc


def run_chain(chain: Chain, state: LoopState, stop: int,
              on_frame: Callable[[int, Tensor, LoopState], Any] = lambda *_: None) -> LoopState:
    """Advance one chain (a batch of one) from ``state`` to frame ``stop``, handing each frame's
    latent z_n and the state after it to ``on_frame``; raises the error a frame failed with."""
    lane = Lane(chain, state, stop, lambda n, z, after, _together, _picture: on_frame(n, z, after))
    advance([lane])
    if lane.error is not None:
        raise lane.error
    return lane.state


def _pictures(frames: Sequence[tuple[Lane, Tensor]]) -> list[Any]:
    """RGB frames of the lanes that want pictures, decoded in one VAE call; None for the rest."""
    wanted = [i for i, (lane, _) in enumerate(frames) if lane.pictures]
    out: list[Any] = [None] * len(frames)
    if wanted:
        model = frames[wanted[0]][0].chain.model
        for i, rgb in zip(wanted, decode_many(model, [frames[i][1] for i in wanted])):
            out[i] = rgb
    return out


def _deliver(lane: Lane, frame: int, state: LoopState, z: Tensor, together: int, picture: Any = None) -> None:
    lane.on_frame(frame, z, state, together, picture)
    lane.state = state  # only once the frame is safely handed on


def seam_steps(latents: Mapping[int, Tensor], anchors: Sequence[int]) -> tuple[list[float], list[float]]:
    """Mean absolute latent step onto each anchor after the first (the seams), and every other
    frame step (inside segments): how visible the cuts between parallel segments are."""
    frames = sorted(latents)
    seams, inside = [], []
    for before, after in zip(frames, frames[1:]):
        step = float((latents[after] - latents[before]).abs().mean())
        (seams if after in anchors[1:] else inside).append(step)
    return seams, inside
