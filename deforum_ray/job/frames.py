"""Per-frame values of a clip, evaluated once: every schedule, and the img2img start index and
transformer passes its strength implies.

Spec checks, the plan and the frame loop all read a clip's schedules through :func:`evaluate`
(one evaluation per schedule string, frame count and seed in a process) and
:class:`ClipFrames`, so they agree frame by frame. Which fields are schedules is said once, by
``rule(schedule=True)`` on the spec's dataclasses. Like the rest of ``job``: numpy, no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .schedule import parse_schedule

CACHED_SCHEDULES = 32  # a clip has 14; bounded because a hostile spec may ask for 10^6 frames each


def start_indices(strength: np.ndarray, steps: int) -> np.ndarray:
    """img2img start index per frame, ``round(steps * (1 - strength))``, rounding halves up.

    A frame then runs ``steps - k`` transformer passes. The product is rounded to 9 decimals
    first so that float noise (5 * 0.7 = 3.4999999999999996) cannot flip a half.
    """
    exact = np.round(steps * (1.0 - np.asarray(strength, dtype=np.float64)), 9)
    return np.clip(np.floor(exact + 0.5), 0, steps).astype(np.int64)


@functools.lru_cache(maxsize=CACHED_SCHEDULES)
def evaluate(text: str, num_frames: int, seed: int) -> np.ndarray:
    """A schedule's value on each of ``num_frames`` frames (read-only: the array is shared)."""
    values = parse_schedule(text, num_frames, seed=seed)
    values.flags.writeable = False
    return values


def scheduled_fields(settings: type) -> tuple[tuple[str, dataclasses.Field], ...]:
    """(dotted path, field) of every field marked ``schedule`` in a spec dataclass, nested ones
    (``motion.zoom``) included, in declaration order."""
    hints = typing.get_type_hints(settings)
    out: list[tuple[str, dataclasses.Field]] = []
    for f in dataclasses.fields(settings):
        if f.metadata.get("schedule"):
            out.append((f.name, f))
        elif dataclasses.is_dataclass(hints.get(f.name)):
            out += [(f"{f.name}.{path}", sub) for path, sub in scheduled_fields(hints[f.name])]
    return tuple(out)


def lookup(node: Any, path: str) -> Any:
    """``node.a.b`` (or ``node["a"]["b"]``) for the path ``a.b``; None where a level is missing."""
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
        if node is None:
            return None
    return node


@dataclass(frozen=True)
class ClipFrames:
    """Every schedule of a clip on every frame, and what its strength means for the sampler."""

    values: Mapping[str, np.ndarray]  # by path: "strength", "noise_scale", "motion.zoom", ...
    start: np.ndarray  # img2img start index per frame
    passes: np.ndarray  # transformer passes per frame (frame 0 from noise runs every step)

    @classmethod
    def of(cls, clip: Any) -> "ClipFrames":
        values = {path: evaluate(lookup(clip, path), clip.num_frames, clip.seed)
                  for path, _ in scheduled_fields(type(clip))}
        start = start_indices(values["strength"], clip.steps)
        passes = clip.steps - start
        if clip.init_image is None:
            passes[0] = clip.steps
        return cls(values, start, passes)

    def __getitem__(self, path: str) -> np.ndarray:
        return self.values[path]


@dataclass(frozen=True)
class Cadence:
    """The frames a chain diffuses, its *keys* (Deforum's ``diffusion_cadence``): ``start``, every
    ``every``-th frame after it, and its last frame ``stop - 1``. The frames between two keys are
    the keys warped to them and blended (``frame.loop``); ``every = 1`` diffuses every frame.

    Arithmetic, not a list: a clip may have a million frames."""

    start: int
    stop: int  # one past the chain's last frame
    every: int = 1

    def __post_init__(self) -> None:
        if self.every < 1 or self.stop <= self.start:
            raise ValueError(f"a cadence needs every >= 1 and stop > start, got {self}")

    def is_key(self, frame: int) -> bool:
        return frame == self.stop - 1 or (frame - self.start) % self.every == 0

    def next_key(self, frame: int) -> int:
        """The first key at or after ``frame`` (``start <= frame < stop``)."""
        steps = -(-(frame - self.start) // self.every)  # ceiling division
        return min(self.start + steps * self.every, self.stop - 1)

    def previous_key(self, frame: int) -> int:
        """The last key before ``frame`` (``start < frame < stop``)."""
        return self.start + (frame - 1 - self.start) // self.every * self.every

    def keys(self) -> list[int]:
        keys = list(range(self.start, self.stop, self.every))
        return keys if keys[-1] == self.stop - 1 else [*keys, self.stop - 1]

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.every) + (0 if (self.stop - 1 - self.start) % self.every == 0 else 1)
