"""The sequential latent loop over chains of frames (DESIGN.md sections 2 and 3).

Frame n > first: warp z_{n-1} by the frame's motion, mix in noise at t_k, run the Euler steps
k ... steps-1, match colour statistics on the latent that is carried forward, decode. The whole
loop state is :class:`LoopState` (latent, previous noise, colour reference, frame index): a few
small tensors, so a checkpoint of it resumes the chain bit-exactly.

With a cadence N (Deforum's ``diffusion_cadence``) a chain diffuses only its key frames (every
N-th and its last; :class:`~deforum_ray.job.frames.Cadence`): a key is the key before it warped
by the motion of the whole gap, and each frame between two keys a < f < b is z_a warped forward to
f blended with z_b warped back to f, by (f - a)/(b - a) (:func:`between_keys`). The in-betweens are
handed on after key b, each with a state holding z_a and z_b, so a checkpoint between them resumes
bit-exactly too.

A 3d camera with a depth model moves each latent cell by its own distance: every key is decoded
and seen by the depth model once it is settled (:func:`key_depths`), and its depth joins the state.

Three kinds of chain share that step. A whole clip renders every frame. An *anchor chain* renders
only a clip's anchor frames 0, N, 2N, ...: each is the anchor before it warped by the motion
accumulated over the gap (one matrix, the exact product of the per-frame ones) and re-diffused at
``anchor_strength``. A *segment* starts on its anchor as rendered and eases its last ``blend``
frames toward the next anchor, so segments render in parallel and still meet smoothly.

:func:`advance` moves several chains forward together, one frame each per round, running the
transformer once per Euler step for all of them (``cluster.chains_per_worker``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..job.plan import ChainKind
from ..job.frames import Cadence, ClipFrames
from ..job.spec import ClipSpec
from ..model.denoiser import TextEmbedding
from ..model.loading import VAE_SCALE, FluxModel
from ..model.vae import decode_many, decode_on_device
from .color import match_channel_stats
from .motion import Vector3, camera_matrix, compose, motion_matrix, rigid_move, warp, warp_depth
from .noise import frame_noise
from .prompts import embedding_at
from .sampling import euler_step, get_schedule, image_seq_len, latent_image_ids, mix_noise, pack, start_index, unpack


@dataclass(frozen=True)
class FrameSchedules:
    """Every per-frame value of a clip (:class:`~deforum_ray.job.frames.ClipFrames`, evaluated
    once), and the motion maps they make: 2D moves, or a 3D camera's."""

    frames: ClipFrames
    mode: str = "2d"
    height: int = 0  # of the frame in pixels: a 3d camera's focal length in pixels depends on it

    @classmethod
    def of(cls, clip: ClipSpec, height: int = 0) -> "FrameSchedules":
        return cls(ClipFrames.of(clip), clip.motion.mode, height)

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
        """The forward map from frame ``frame - 1`` to frame ``frame``."""
        f = self.frames
        if self.mode == "3d":
            if self.height <= 0:
                raise ValueError("a 3d camera needs the frame height")
            return camera_matrix(*self.camera(frame), float(f["motion.fov"][frame]), self.height)
        return motion_matrix(f["motion.zoom"][frame], f["motion.angle"][frame], f["motion.translation_x"][frame],
                             f["motion.translation_y"][frame])

    def motion_between(self, earlier: int, later: int) -> np.ndarray:
        """The motion from frame ``earlier`` to frame ``later``: the product of the maps of frames
        ``earlier + 1 ... later`` (for adjacent frames, exactly the later frame's own map)."""
        return compose(self.motion(n) for n in range(earlier + 1, later + 1))

    def camera_between(self, earlier: int, later: int) -> np.ndarray:
        """A 3d camera's rigid move (4x4) from frame ``earlier`` to frame ``later``: the product of
        the moves of the frames between, for a scene whose depth is known at ``earlier``."""
        return compose((rigid_move(*self.camera(n)) for n in range(earlier + 1, later + 1)), size=4)

    def camera(self, frame: int) -> tuple[Vector3, Vector3]:
        """A 3d camera's (translation, rotation) schedule values at ``frame``."""
        f = self.frames
        return (tuple(float(f[f"motion.translation_{a}"][frame]) for a in "xyz"),  # type: ignore[return-value]
                tuple(float(f[f"motion.rotation_3d_{a}"][frame]) for a in "xyz"))

    def warp(self, z: Tensor, source: int, target: int, depth: Tensor | None, interpolation: str,
             padding: str) -> Tensor:
        """``z``, frame ``source``'s latent, moved to where the camera is at frame ``target`` (after
        it, or before it: the move undone). With the depth of each of its cells (a 3d camera with a
        depth model) each cell is reprojected, through the lens of the later frame; without, the
        frame moves as a whole (a 2D map, or the homography of a plane)."""
        earlier, later = min(source, target), max(source, target)
        if depth is not None and self.mode == "3d":
            move = self.camera_between(earlier, later)
            fov = float(self.frames["motion.fov"][later])
            return warp_depth(z, move if source <= target else np.linalg.inv(move), depth, fov, self.height,
                              interpolation, padding)
        matrix = self.motion_between(earlier, later)
        return warp(z, matrix if source <= target else np.linalg.inv(matrix), interpolation, padding)


@dataclass
class LoopState:
    """What frame ``frame`` needs from the frames before it, in float32. The latents live on the
    model's device while a chain runs (the loop's math stays there); the noise on the CPU, where it
    is drawn. :meth:`tensors` copies everything to the CPU for a checkpoint."""

    frame: int = 0
    latent: Tensor | None = None  # z of the last key before ``frame`` (z_{frame-1} at cadence 1)
    noise: Tensor | None = None  # eps of the last frame diffused (the slerp walk)
    color_ref: Tensor | None = None  # the colour-coherence reference latent
    next_key: Tensor | None = None  # z of the key after ``frame``, once diffused: ``frame`` is an in-between
    # The distance of each latent cell of ``latent`` and ``next_key`` (3d with a depth model), seen by
    # the depth model on their decoded frames: kept, as a resume could not see them with the same bits.
    depth: Tensor | None = None
    next_key_depth: Tensor | None = None

    TENSORS: ClassVar[tuple[str, ...]] = ("latent", "noise", "color_ref", "next_key", "depth", "next_key_depth")

    def tensors(self) -> dict[str, Tensor]:
        """The state on the CPU, each tensor its own memory (safetensors refuses shared memory: on
        a chain's first frame the colour reference *is* the latent)."""
        out = {"frame": torch.tensor([self.frame], dtype=torch.int64)}
        for name in self.TENSORS:
            value = getattr(self, name)
            if value is not None:
                tensor = value.cpu().contiguous()
                if any(tensor.data_ptr() == other.data_ptr() for other in out.values()):
                    tensor = tensor.clone()
                out[name] = tensor
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "LoopState":
        return cls(int(tensors["frame"][0]), *(tensors.get(name) for name in cls.TENSORS))


@dataclass(frozen=True)
class FrameOut:
    """A frame handed on by the loop: its latent, the state after it, and how it was made."""

    frame: int
    z: Tensor
    state: LoopState
    diffused: bool  # denoised (a key, or a segment's anchor); False: warped and blended between keys
    together: int = 1  # chains denoised in the same batch
    picture: Any = None  # the decoded RGB frame, for lanes that want pictures


def between_keys(z_a: Tensor, z_b: Tensor, a: int, frame: int, b: int, schedules: "FrameSchedules",
                 interpolation: str, padding: str, depth_a: Tensor | None = None,
                 depth_b: Tensor | None = None) -> Tensor:
    """An in-between frame a < frame < b: key a warped forward by the motion a -> frame, key b
    warped back by the inverse of frame -> b, blended by (frame - a)/(b - a), in latent space.
    Both keys are moved to where the camera is at ``frame``, so the blend interpolates content
    that lines up (Deforum blends two earlier keys, both warped forward: see README). A 3d camera
    with a depth model moves each key's cells by that key's own depth."""
    forward = schedules.warp(z_a, a, frame, depth_a, interpolation, padding)
    back = schedules.warp(z_b, b, frame, depth_b, interpolation, padding)
    return torch.lerp(forward, back, (frame - a) / (b - a))


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
    next_anchor_depth: Tensor | None = None  # its depth (3d with a depth model)


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
    depth_model: Any = None  # a model.depth.DepthModel for a 3d camera that sees each frame's depth
    schedules: FrameSchedules = field(init=False)
    timesteps: list[float] = field(init=False)
    cadence: Cadence = field(init=False)

    def __post_init__(self) -> None:
        self.device = self.model.device  # where the loop's latents live and its math runs
        self.schedules = FrameSchedules.of(self.clip, self.height)
        self.cadence = self.frames_diffused()
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
    def frames_diffused(self) -> Cadence:
        return Cadence(0, self.clip.num_frames, self.clip.cadence)

    def key_from(self, frame: int) -> int:
        """The frame the chain diffuses next, standing at ``frame``."""
        return self.cadence.next_key(frame)

    def previous_frame(self, n: int) -> int:
        """The frame key ``n`` is warped from."""
        return self.cadence.previous_key(n)

    def next_frame(self, n: int) -> int:
        return n + 1

    def strength(self, n: int) -> float:
        return float(self.schedules.strength[n])

    def given(self, state: LoopState) -> list[FrameOut] | None:
        """Frames that need no denoising: the in-betweens of two keys, once both are diffused."""
        return self.in_betweens(state) if state.next_key is not None else None

    def in_betweens(self, pending: LoopState) -> list[FrameOut]:
        """Every frame between keys a and b (``pending`` holds both), then b. All of them, also
        those before ``pending.frame`` that a resumed chain already has: the run is decoded in one
        VAE call, and the same call gives the same bytes (:func:`advance` hands on only the rest)."""
        b = self.key_from(pending.frame)
        a, clip = self.previous_frame(b), self.clip
        # On the model's device, as in the first run: a resumed state comes from the CPU
        z_a, z_b = pending.latent.to(self.device), pending.next_key.to(self.device)
        depth_a, depth_b = _on(self.device, pending.depth), _on(self.device, pending.next_key_depth)
        out = [FrameOut(f, between_keys(z_a, z_b, a, f, b, self.schedules, clip.motion.interpolation,
                                        clip.motion.padding, depth_a, depth_b), replace(pending, frame=f + 1),
                        diffused=False)
               for f in range(a + 1, b)]
        after = LoopState(self.next_frame(b), z_b, pending.noise, pending.color_ref, depth=pending.next_key_depth)
        return [*out, FrameOut(b, z_b, after, diffused=True)]

    def ease(self, n: int, z: Tensor) -> Tensor:
        """Pull a latent toward where the chain must arrive (a segment's next anchor)."""
        return z

    @property
    def sees_depth(self) -> bool:
        """A 3d camera with a depth model: each key's depth is seen on its decoded frame."""
        return self.depth_model is not None and self.schedules.mode == "3d"

    # -- one frame, in two halves around the denoising, so that chains can share it --------------
    def prepare(self, state: LoopState) -> FrameInput:
        """Warp, noise and text for the next key: frame ``state.frame`` at cadence 1."""
        n, clip, sched = self.key_from(state.frame), self.clip, self.schedules
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
            latent = state.latent.to(self.device)
            base = self.ease(n, sched.warp(latent, self.previous_frame(n), n, _on(self.device, state.depth),
                                           clip.motion.interpolation, clip.motion.padding))
        start = start_index(clip.steps, self.strength(n))
        return FrameInput(self, n, mix_noise(base, noise, self.timesteps[start], float(sched.noise_scale[n])), start,
                          eps, text)

    def settle(self, state: LoopState, work: FrameInput, z: Tensor) -> Tensor:
        """Colour coherence and easing on the denoised latent: the key as it is kept."""
        n, clip = work.frame, self.clip
        if clip.color_coherence != "none" and n > 0:
            reference = state.color_ref if clip.color_coherence == "match_first" else state.latent
            z = match_channel_stats(z, reference.to(z.device))  # on the latent carried forward, not only the picture
        return self.ease(n, z)  # the identity on a chain's first frame

    def finish(self, state: LoopState, work: FrameInput, z: Tensor, depth: Tensor | None = None) -> list[FrameOut]:
        """The frames a settled key completes (the in-betweens before it, then itself), each with
        the state after it; ``depth``: the key's own (:func:`key_depths`), for a camera that sees it."""
        n, clip = work.frame, self.clip
        color_ref = z if clip.color_coherence == "match_first" and n == 0 else state.color_ref
        if n > state.frame:  # keys of a cadence: the frames since the last key come first
            return self.in_betweens(LoopState(state.frame, state.latent, work.eps, color_ref, next_key=z,
                                              depth=state.depth, next_key_depth=depth))
        return [FrameOut(n, z, LoopState(self.next_frame(n), z, work.eps, color_ref, depth=depth), diffused=True)]


@dataclass
class AnchorChain(Chain):
    """A clip's anchor frames 0, N, 2N, ...: each is the anchor before it warped by the motion
    accumulated over the gap and re-diffused at ``anchor_strength``."""

    kind: ClassVar[ChainKind] = ChainKind.ANCHORS
    anchors: tuple[int, ...] = ()

    def key_from(self, frame: int) -> int:
        return frame  # its state stands on the next anchor

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

    def frames_diffused(self) -> Cadence:
        if self.ends is None:
            raise ValueError("a SegmentChain needs its SegmentEnds")
        return Cadence(self.ends.first.frame - 1, self.ends.next_frame, self.clip.cadence)

    def given(self, state: LoopState) -> list[FrameOut] | None:
        first = self.ends.first
        if state.frame == first.frame - 1:  # its anchor, denoised by the anchor chain
            return [FrameOut(state.frame, first.latent, first, diffused=True)]
        return super().given(state)

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
        aligned = self.schedules.warp(ends.next_anchor.to(z.device), ends.next_frame, n,
                                      _on(z.device, ends.next_anchor_depth), clip.motion.interpolation,
                                      clip.motion.padding)
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
    on_frame: Callable[[FrameOut], Any]
    pictures: bool = False  # decode each frame (batched with the lanes it denoised with) for on_frame
    error: BaseException | None = None

    @property
    def active(self) -> bool:
        return self.error is None and self.state.frame < self.stop


def advance(lanes: Sequence[Lane]) -> None:
    """Advance every lane to its stop, one key frame per lane per round (with the in-betweens it
    completes): the one loop that renders, tests and benches all run. Frames whose chains share a
    batch key denoise together. A lane whose frame fails keeps its error and stops; the rest go on."""
    while active := [lane for lane in lanes if lane.active]:
        groups: dict[tuple[Any, ...], list[tuple[Lane, FrameInput]]] = {}
        given: dict[tuple[Any, ...], list[tuple[Lane, list[FrameOut]]]] = {}
        for lane in active:
            try:
                frames = lane.chain.given(lane.state)
                if frames is not None:
                    given.setdefault(lane.chain.batch_key, []).append((lane, frames))
                else:
                    groups.setdefault(lane.chain.batch_key, []).append((lane, lane.chain.prepare(lane.state)))
            except Exception as exc:
                lane.error = exc
        for ready in given.values():  # together, as the lanes of a batch resumed at one frame were first decoded
            _hand_over(ready, together=1)
        for group in groups.values():
            try:
                latents = denoise_together([work for _, work in group])
            except Exception as exc:
                for lane, _ in group:
                    lane.error = exc
                continue
            settled = []
            for (lane, work), z in zip(group, latents):
                try:
                    settled.append((lane, work, lane.chain.settle(lane.state, work, z)))
                except Exception as exc:
                    lane.error = exc
            try:
                seen = key_depths([(lane.chain, z) for lane, _, z in settled])
            except Exception as exc:
                for lane, _, _ in settled:
                    lane.error = exc
                continue
            finished = []
            for (lane, work, z), (depth, picture) in zip(settled, seen):
                try:
                    frames = lane.chain.finish(lane.state, work, z, depth)
                    if picture is not None and len(frames) == 1:
                        # A key with no in-betweens: its picture is the frame its depth was seen on (a
                        # key after in-betweens is decoded with them, as a resume decodes it again).
                        frames = [replace(frames[0], picture=picture)]
                    finished.append((lane, frames))
                except Exception as exc:
                    lane.error = exc
            _hand_over(finished, together=len(group))


def _on(device: Any, tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.to(device)


def key_depths(keys: Sequence[tuple[Chain, Tensor]]) -> list[tuple[Tensor | None, np.ndarray | None]]:
    """(depth, RGB picture) of each settled key whose chain sees depth ((None, None) for the rest):
    the keys of one depth model decoded in one VAE call and seen in one depth pass. The depth is
    kept in the loop state and never recomputed on resume, so the batch it was seen in does not
    matter there."""
    out: list[tuple[Tensor | None, np.ndarray | None]] = [(None, None)] * len(keys)
    groups: dict[int, list[int]] = {}
    for i, (chain, _) in enumerate(keys):
        if chain.sees_depth:
            groups.setdefault(id(chain.depth_model), []).append(i)
    for members in groups.values():
        chain = keys[members[0]][0]
        pixels = decode_on_device(chain.model, [keys[i][1] for i in members])
        depths = chain.depth_model.latent_depths(pixels, (chain.latent_h, chain.latent_w))
        pictures = pixels.permute(0, 2, 3, 1).cpu().numpy()  # as decode_many gives them
        for k, i in enumerate(members):
            out[i] = (depths[k], pictures[k])
    return out


def run_chain(chain: Chain, state: LoopState, stop: int,
              on_frame: Callable[[int, Tensor, LoopState], Any] = lambda *_: None) -> LoopState:
    """Advance one chain (a batch of one) from ``state`` to frame ``stop``, handing each frame's
    latent z_n and the state after it to ``on_frame``; raises the error a frame failed with."""
    lane = Lane(chain, state, stop, lambda out: on_frame(out.frame, out.z, out.state))
    advance([lane])
    if lane.error is not None:
        raise lane.error
    return lane.state


def _hand_over(finished: Sequence[tuple[Lane, Sequence[FrameOut]]], together: int) -> None:
    """Hand each lane its frames in order, those from where it stands to its stop, the pictures of
    all of them decoded in one VAE call first: the frames a lane skips too, because a VAE batch
    gives different bits than a smaller one and a resumed chain must decode as the first run did.
    A lane's state moves only once a frame is safely handed on."""
    outs = [(lane, replace(out, together=together)) for lane, frames in finished for out in frames]
    try:
        pictures = _pictures(outs)
    except Exception as exc:
        for lane, _ in finished:
            lane.error = exc
        return
    for (lane, out), picture in zip(outs, pictures):
        if lane.error is None and lane.state.frame <= out.frame < lane.stop:
            try:
                lane.on_frame(out if out.picture is not None else replace(out, picture=picture))
                lane.state = out.state
            except Exception as exc:
                lane.error = exc


def _pictures(frames: Sequence[tuple[Lane, FrameOut]]) -> list[Any]:
    """RGB frames of the lanes that want pictures and have none yet, decoded in one VAE call; None
    for the rest."""
    wanted = [i for i, (lane, out) in enumerate(frames) if lane.pictures and out.picture is None]
    out: list[Any] = [None] * len(frames)
    if wanted:
        model = frames[wanted[0]][0].chain.model
        for i, rgb in zip(wanted, decode_many(model, [frames[i][1].z for i in wanted])):
            out[i] = rgb
    return out


def seam_steps(latents: Mapping[int, Tensor], anchors: Sequence[int]) -> tuple[list[float], list[float]]:
    """Mean absolute latent step onto each anchor after the first (the seams), and every other
    frame step (inside segments): how visible the cuts between parallel segments are."""
    frames = sorted(latents)
    seams, inside = [], []
    for before, after in zip(frames, frames[1:]):
        step = float((latents[after] - latents[before]).abs().mean())
        (seams if after in anchors[1:] else inside).append(step)
    return seams, inside
