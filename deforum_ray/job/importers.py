"""Classic Deforum settings files and Parseq manifests, imported as job specs (``deforum-ray import``).

A Deforum settings file is the JSON the A1111 extension saves (``.txt`` or ``.json``): ~250 keys,
most of them for Stable Diffusion, the web UI or other extensions. A Parseq manifest is the JSON
Parseq exports, with every frame's values in ``rendered_frames``. Both become one job spec with a
single clip; what cannot be carried over exactly is said, one line per setting (:attr:`Imported.notes`).

Two meanings differ and are converted, not renamed (README "Coming from Deforum"):

* Deforum's ``strength_schedule`` is the share of the previous frame *kept*; ``strength`` here is
  the share of the denoising steps *run*: ``1 - x``, keyframe by keyframe.
* Deforum's ``noise_schedule`` adds pixel noise (0.065); ``noise_scale`` here scales the proper
  flow-matching mix (1). The first has no counterpart: reported, not carried.

The importer reads data from a stranger: a bounded file, JSON only, schedules through our own
parser (never ``eval``), every value checked before it is written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import printable
from .limits import MAX_CLIP_FRAMES, MAX_SCHEDULE_LENGTH, MAX_SPEC_BYTES
from .schedule import ScheduleError, evaluate_keyframes, parse_keyframes, parse_schedule
from .spec import SpecError, data_to_yaml, parse_yaml

DEFAULT_STEPS = 4  # the steps the strength floor is worked out for, unless the caller knows the model's

__all__ = ["Imported", "ImportProblem", "import_file", "from_deforum", "from_parseq", "imported_yaml"]


class ImportProblem(ValueError):
    """A file that cannot be imported: one line (exit 2)."""


@dataclass
class Imported:
    kind: str  # "Deforum settings" or "Parseq manifest"
    job: dict[str, Any]  # a job spec tree that `validate` accepts
    notes: list[str] = field(default_factory=list)  # "ignored: ...", "changed: ..." one line each
    unused: list[str] = field(default_factory=list)  # keys of other tools (SD, the web UI, ControlNet, ...)


# ---------------------------------------------------------------------------------------------
# Reading


def import_file(path: str | Path, *, random_seed: Callable[[], int], steps: int = DEFAULT_STEPS) -> Imported:
    """Read ``path`` and convert it; ``random_seed()`` fixes Deforum's seed -1; ``steps``: the
    model's, which sets the least strength that still runs a step. Raises :class:`ImportProblem`
    with one line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise ImportProblem(f"{path}: {size} bytes, more than a settings file may hold ({MAX_SPEC_BYTES})")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImportProblem(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportProblem(f"{path}: is a folder, not a settings file") from None
    except UnicodeDecodeError:
        raise ImportProblem(f"{path}: not a text file (not UTF-8)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportProblem(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                            "a Deforum settings file or Parseq manifest is JSON") from None
    except RecursionError:
        raise ImportProblem(f"{path}: nested too deeply to be a settings file") from None
    if not isinstance(data, dict):
        raise ImportProblem(f"{path}: a JSON {type(data).__name__}, not a Deforum settings file or Parseq manifest")
    name = _job_name(path.stem)
    if "rendered_frames" in data or str((data.get("meta") or {}).get("generated_by", "")) == "sd_parseq":
        return from_parseq(data, name, label=str(path), steps=steps)
    if "max_frames" in data and ("prompts" in data or "animation_prompts" in data):
        return from_deforum(data, name, random_seed=random_seed, label=str(path), steps=steps)
    raise ImportProblem(f"{path}: JSON, but neither a Deforum settings file (no max_frames and prompts) "
                        "nor a Parseq manifest (no rendered_frames)")


def _job_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "imported"
    return name[:64]


# ---------------------------------------------------------------------------------------------
# Classic Deforum settings

# Keys whose value, when it differs from the neutral one, changes a Deforum render in a way this
# renderer cannot: each gets a line.
CONSEQUENTIAL: dict[str, tuple[Any, str]] = {
    "noise_schedule": (None, "Deforum adds pixel noise; here noise_scale 1 is the proper flow-matching mix"),
    "use_init": (False, "init_image is not carried over: set it on the clip (a path or URI)"),
    "use_mask": (False, "masks are not supported"),
    "enable_perspective_flip": (False, "perspective flip is not supported"),
    "hybrid_motion": ("None", "hybrid video is not supported"),
    "hybrid_composite": ("None", "hybrid video is not supported"),
    "optical_flow_cadence": ("None", "optical flow is not supported"),
    "optical_flow_redo_generation": ("None", "optical flow is not supported"),
    "enable_checkpoint_scheduling": (False, "one model per job here"),
    "use_looper": (False, "guided images are not supported"),
    "transform_center_x": ("0.5", "motion turns and zooms about the frame's centre"),
    "transform_center_y": ("0.5", "motion turns and zooms about the frame's centre"),
    "contrast_schedule": ("1", "contrast is not scheduled here"),
    "cfg_scale_schedule": (None, "FLUX's guidance is the model preset's"),
    "steps": (None, "the model preset's steps apply"),
    "parseq_manifest": ("", "import the Parseq manifest itself: deforum-ray import manifest.json"),
}
SEED_BEHAVIORS = {"iter": "incremental", "fixed": "fixed", "random": "incremental", "ladder": "incremental",
                  "alternate": "incremental", "schedule": "incremental"}
BORDERS = {"replicate": "border", "wrap": "reflection", "reflection": "reflection", "border": "border",
           "zeros": "zeros"}
SAMPLING = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "bilinear"}
MAX_SIZE = 8192  # width and height, as the spec bounds them


def least_strength(steps: int) -> float:
    """The least strength that runs one of ``steps`` steps (validation refuses less), rounded up:
    a frame Deforum keeps whole (strength_schedule 1) runs this share here."""
    return math.ceil(500 / steps + 1) / 1000


def from_deforum(settings: Mapping[str, Any], name: str, *, random_seed: Callable[[], int],
                 label: str = "settings", steps: int = DEFAULT_STEPS) -> Imported:
    """One clip of ``max_frames`` frames from a classic Deforum settings mapping."""
    out = Imported("Deforum settings", {"name": name})
    job, notes = out.job, out.notes
    frames = _whole(settings.get("max_frames"), "max_frames", label, minimum=1)
    if frames > MAX_CLIP_FRAMES:
        raise ImportProblem(f"{label}: max_frames: {frames}, more than a clip may have ({MAX_CLIP_FRAMES})")
    used = {"max_frames", "prompts", "animation_prompts", "W", "H", "seed", "seed_behavior", "seed_iter_N",
            "strength_schedule", "color_coherence", "fps", "border", "padding_mode", "sampling_mode",
            "animation_mode", "angle", "zoom", "translation_x", "translation_y", "positive_prompts",
            "negative_prompts", "animation_prompts_positive", "animation_prompts_negative", "diffusion_cadence",
            *DEFORUM_3D, "fov_schedule", "near_schedule", "far_schedule", "depth_algorithm", "use_depth_warping", "midas_weight",
            *CONSEQUENTIAL}

    for key, axis in (("W", "width"), ("H", "height")):
        if key in settings:
            size = _whole(settings[key], key, label, minimum=1)
            rounded = max(16, int(round(size / 16)) * 16)
            if rounded > MAX_SIZE:
                raise ImportProblem(f"{label}: {key}: {size} pixels, more than {MAX_SIZE}")
            if rounded != size:
                notes.append(f"changed: {key} {size} → {rounded} (a multiple of 16)")
            job[axis] = rounded

    seed = settings.get("seed", -1)
    if isinstance(seed, str) and re.fullmatch(r"-?\d+", seed.strip()):
        seed = int(seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < -1:
        raise ImportProblem(f"{label}: seed: expected a whole number, got {seed!r}")
    if seed == -1:
        seed = random_seed()
        notes.append(f"changed: seed -1 (a new random seed each run) → {seed}, fixed so that the render repeats")
    job["seed"] = seed % 2**32

    behaviour = str(settings.get("seed_behavior", "iter"))
    job["noise_mode"] = SEED_BEHAVIORS.get(behaviour, "incremental")
    if behaviour not in ("iter", "fixed"):
        notes.append(f"changed: seed_behavior {behaviour} → noise_mode {job['noise_mode']} (a new noise each "
                     "frame, from seed + frame)")
    elif behaviour == "iter" and _number(settings.get("seed_iter_N", 1)) not in (1, None):
        notes.append(f"changed: seed_iter_N {settings.get('seed_iter_N')} → 1 (noise_mode incremental draws a new "
                     "noise every frame)")

    job["prompts"] = _deforum_prompts(settings, frames, label, notes)
    job["num_frames"] = frames

    strength = _kept_to_run(str(settings.get("strength_schedule", "")), least_strength(steps), notes)
    if strength is not None:
        job["strength"] = strength

    coherence = str(settings.get("color_coherence", "None"))
    if coherence in ("None", ""):
        job["color_coherence"] = "none"
    else:
        job["color_coherence"] = "match_first" if re.search(r"LAB|HSV|RGB", coherence) else "none"
        how = ("each latent channel's mean and spread are matched to the first frame's"
               if job["color_coherence"] == "match_first" else "no colour coherence")
        notes.append(f"changed: color_coherence {coherence} → {job['color_coherence']} ({how})")

    if "fps" in settings:
        fps = _number(settings["fps"])
        if fps is None or not 1 <= fps <= 240:
            notes.append(f"ignored: fps {settings['fps']!r} — expected a number in [1, 240]")
        else:
            job["fps"] = fps if not float(fps).is_integer() else int(fps)

    job["motion"] = _deforum_motion(settings, frames, label, notes)
    _carry_cadence(job, "diffusion_cadence", settings.get("diffusion_cadence"), notes)

    for key, (neutral, why) in CONSEQUENTIAL.items():
        if key in settings and not _is_neutral(settings[key], neutral, frames):
            notes.append(f"ignored: {key} {_show(settings[key])} — {why}")
    out.unused = sorted(k for k in settings if k not in used)
    return out


def _carry_cadence(job: dict[str, Any], key: str, value: Any, notes: list[str]) -> None:
    """Deforum's ``diffusion_cadence`` (Parseq's ``cadence``) becomes ``cadence``; its in-betweens
    are made differently here (README "Diffusion cadence"), which the note says."""
    if value is None:
        return
    number = _number(value)
    if number is None or not float(number).is_integer() or not 1 <= number <= MAX_CLIP_FRAMES:
        notes.append(f"ignored: {key} {_show(value)} — expected a whole number of frames, at least 1")
        return
    if number > 1:
        job["cadence"] = int(number)
        notes.append(f"changed: {key} {int(number)} → cadence {int(number)} (each frame between two diffused ones "
                     "blends both, warped to it; Deforum's blends the two before it)")


def _deforum_prompts(settings: Mapping[str, Any], frames: int, label: str, notes: list[str]) -> dict[int, str]:
    raw = settings.get("prompts", settings.get("animation_prompts"))
    if isinstance(raw, str):  # some versions store the prompts as a JSON string
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ImportProblem(f"{label}: prompts: not a JSON mapping of frame to prompt") from None
    if not isinstance(raw, Mapping) or not raw:
        raise ImportProblem(f"{label}: prompts: expected a mapping of frame to prompt, got {_show(raw)}")
    suffix = str(settings.get("positive_prompts") or settings.get("animation_prompts_positive") or "").strip()
    prompts: dict[int, str] = {}
    negatives = 0
    for key, text in raw.items():
        frame = _prompt_frame(str(key), frames, label)
        if frame >= frames:
            notes.append(f"ignored: prompt at frame {frame} ({key!r}) — past the last frame {frames - 1}")
            continue
        positive, _, negative = str(text).partition("--neg")
        negatives += bool(negative.strip())
        prompts[frame] = " ".join(f"{positive.strip()} {suffix}".split()) or "."
    if not prompts:
        raise ImportProblem(f"{label}: prompts: none falls within the {frames} frames")
    if min(prompts) != 0:
        first = min(prompts)
        prompts = {0 if f == first else f: p for f, p in prompts.items()}
        notes.append(f"changed: the first prompt (frame {first}) also covers the frames before it, from frame 0")
    if suffix:
        notes.append(f"changed: positive_prompts {suffix!r} appended to every prompt")
    shared_negative = str(settings.get("negative_prompts") or settings.get("animation_prompts_negative") or "")
    if negatives or shared_negative.strip():
        what = [f"{negatives} '--neg' parts"] if negatives else []
        what += ["negative_prompts"] if shared_negative.strip() else []
        notes.append(f"ignored: negative prompts ({', '.join(what)}) — FLUX here has no negative prompt")
    return dict(sorted(prompts.items()))


def _prompt_frame(key: str, frames: int, label: str) -> int:
    """A prompt's frame: a number, or an expression over ``max_f`` (Deforum evaluates it)."""
    text = key.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        frame = float(evaluate_keyframes(parse_keyframes(f"0:({text})"), frames)[0])
    except ScheduleError as exc:
        raise ImportProblem(f"{label}: prompts: key {key!r} is neither a frame number nor an expression "
                            f"({exc.reason})") from None
    if frame < 0:
        raise ImportProblem(f"{label}: prompts: key {key!r} gives frame {frame:g}, before the first")
    return int(frame)


DEFORUM_3D = ("translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z")
DEFORUM_DEFAULT_FOV = 70.0  # fov_schedule "0: (70)"
DEFORUM_DEPTH = "depth-anything-v2-small"  # what Deforum's depth algorithms become (job.choices.DEPTH_PRESETS)


def _deforum_motion(settings: Mapping[str, Any], frames: int, label: str, notes: list[str]) -> dict[str, Any]:
    mode = str(settings.get("animation_mode", "2D"))
    motion: dict[str, Any] = {}
    if mode == "None":
        notes.append("changed: animation_mode None → no motion (zoom, angle and translations left at rest)")
        return motion
    if mode not in ("2D", "3D"):
        notes.append(f"changed: animation_mode {mode} → 2D: zoom, angle, translation_x and translation_y are "
                     "carried; its other motion is not")
    moves = ("translation_x", "translation_y", *DEFORUM_3D) if mode == "3D" else (
        "zoom", "angle", "translation_x", "translation_y")
    for key in moves:
        if key in settings:
            text = _schedule_text(settings[key], key, frames, label, notes)
            if text is not None:
                motion[key] = text
    if mode == "3D":
        motion.update(_deforum_camera(settings, motion, frames, label, notes))
    border = str(settings.get("padding_mode" if mode == "3D" else "border", "replicate"))
    if border in BORDERS:
        motion["padding"] = BORDERS[border]
        if border == "wrap":
            notes.append("changed: border wrap → padding reflection (no wrap-around here)")
    sampling = str(settings.get("sampling_mode", "bicubic"))
    if sampling in SAMPLING:
        motion["interpolation"] = SAMPLING[sampling]
        if sampling == "nearest":
            notes.append("changed: sampling_mode nearest → interpolation bilinear")
    return motion


def _deforum_camera(settings: Mapping[str, Any], motion: dict[str, Any], frames: int, label: str,
                    notes: list[str]) -> dict[str, Any]:
    """Deforum's 3D mode: the camera's lens, its depth, and its moves along the view axis, which
    Deforum makes 1/tan(fov/2) times faster than a pinhole does (README, 3D camera motion)."""
    camera: dict[str, Any] = {"mode": "3d"}
    for key in ("zoom", "angle"):  # Deforum's 3D mode does not use them either
        if key in settings and not _is_neutral(settings[key], "1" if key == "zoom" else "0", frames):
            notes.append(f"ignored: {key} {_show(settings[key])} — not used in 3D mode, here as in Deforum")
    for ours in ("fov", "near", "far"):
        theirs = f"{ours}_schedule"
        if theirs in settings:
            text = _schedule_text(settings[theirs], theirs, frames, label, notes)
            if text is not None:
                camera[ours] = text
    fov = float(parse_schedule(camera["fov"], frames, 0)[0]) if "fov" in camera else DEFORUM_DEFAULT_FOV
    factor = 1.0 / math.tan(math.radians(fov) / 2.0) if 0 < fov < 180 else 1.0
    for key in ("translation_z", "rotation_3d_z"):
        if key in motion and not _is_neutral(motion[key], "0", frames):
            scaled = _each_keyframe(motion[key], parse_keyframes(motion[key]), lambda x: _format(x * factor),
                                    lambda expr: f"{factor:.6g} * ({expr})")
            notes.append(f"changed: {key} {_show(motion[key])} → {_show(scaled)} (×{factor:.4g}: Deforum moves along "
                         f"the view axis 1/tan(fov/2) times faster than a pinhole camera, at fov {fov:g})")
            camera[key] = scaled
    camera["depth"] = _deforum_depth(settings, notes)
    return camera


def _deforum_depth(settings: Mapping[str, Any], notes: list[str]) -> str:
    """Deforum's 3D mode warps by a depth model's map unless ``use_depth_warping`` is off (then by a
    plane, as ``depth: none``); here one depth model stands for all of Deforum's."""
    if str(settings.get("use_depth_warping", True)).strip().lower() in ("false", "0", "no"):
        return "none"
    algorithm = str(settings.get("depth_algorithm", "")).strip()
    notes.append(f"changed: depth_algorithm {algorithm or '(none given)'} → depth {DEFORUM_DEPTH} (the depth model "
                 f"here, its map scaled to distances 1 to 2; fetch it once: deforum-ray fetch-model {DEFORUM_DEPTH})")
    if "adabins" in algorithm.lower() and "midas_weight" in settings:
        notes.append(f"ignored: midas_weight {_show(settings['midas_weight'])} — Deforum's blend of MiDaS and AdaBins; "
                     "one depth model here")
    return DEFORUM_DEPTH


def _schedule_text(value: Any, key: str, frames: int, label: str, notes: list[str]) -> str | None:
    """A schedule as Deforum wrote it, when it reads here; else a note and None (the default)."""
    text = str(value).strip()
    try:
        parse_schedule(text, frames, 0)
    except ScheduleError as exc:
        notes.append(f"ignored: {key} {_show(text)} — cannot read it here: {exc.reason}")
        return None
    return text


def _kept_to_run(text: str, least: float, notes: list[str]) -> str | None:
    """Deforum's strength (share of the previous frame kept) as ours (share of the steps run):
    each keyframe ``k:(x)`` becomes ``k:(1 - x)``, so that interpolation between keys agrees.
    A frame that would run no step (Deforum keeps it whole) runs ``least`` of them here."""
    if not text.strip():
        return None
    try:
        keys = parse_keyframes(text)
    except ScheduleError as exc:
        notes.append(f"ignored: strength_schedule {_show(text)} — cannot read it here: {exc.reason}")
        return None
    clipped = any(1.0 - key.number < least for key in keys if key.number is not None)
    converted = _each_keyframe(text, keys, lambda x: _format(max(least, min(1.0, 1.0 - x))),
                               lambda expr: f"max({least:g}, min(1, 1 - ({expr})))")
    if clipped:
        notes.append(f"changed: strength_schedule keeps (nearly) whole frames: they run strength {least:g} here, "
                     "one step of the model's")
    notes.append(f"changed: strength_schedule {_show(text)} (the share kept) → strength {_show(converted)} "
                 "(the share of steps run)")
    return converted


def _each_keyframe(text: str, keys: list, number: Callable[[float], str], expression: Callable[[str], str]) -> str:
    """The schedule ``text`` (parsed as ``keys``) with each keyframe's value changed: a number by
    ``number``, an expression (as written) by ``expression``; keys kept as written."""
    pieces = []
    for key in keys:
        value = number(key.number) if key.number is not None else expression(text[key.pos:_value_end(text, key.pos)])
        pieces.append(f"{key.key_text or key.frame}:({value})")  # a bare number is key 0
    return ", ".join(pieces)


def _value_end(text: str, start: int) -> int:
    """The index of the ``)`` that closes a keyframe value starting at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            if depth == 0:
                return i
            depth -= 1
    return len(text)


def _is_neutral(value: Any, neutral: Any, frames: int) -> bool:
    if neutral is None:
        return False
    if isinstance(neutral, str) and re.fullmatch(r"-?[\d.]+", neutral):
        try:
            values = parse_schedule(str(value), frames, 0)
        except ScheduleError:
            return False
        return bool((values == float(neutral)).all())
    if isinstance(neutral, int) and not isinstance(neutral, bool):
        return _number(value) == neutral
    return value == neutral or str(value) == str(neutral)


# ---------------------------------------------------------------------------------------------
# Parseq manifests

PARSEQ_MOTION = ("zoom", "angle", "translation_x", "translation_y")
PARSEQ_3D = ("translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "fov", "near", "far")


def from_parseq(manifest: Mapping[str, Any], name: str, label: str = "manifest",
                steps: int = DEFAULT_STEPS) -> Imported:
    """Per-frame schedules, exact, from a Parseq manifest's ``rendered_frames``."""
    out = Imported("Parseq manifest", {"name": name})
    job, notes = out.job, out.notes
    version = str((manifest.get("meta") or {}).get("version", ""))
    if version and not re.match(r"^0\.", version):
        raise ImportProblem(f"{label}: Parseq manifest version {version}: unknown (this importer reads 0.x)")
    rows = manifest.get("rendered_frames")
    if not isinstance(rows, list) or not rows:
        raise ImportProblem(f"{label}: a Parseq document without rendered_frames: export the manifest from "
                            "Parseq after it has rendered the frames")
    if not all(isinstance(r, Mapping) and isinstance(r.get("frame"), int) for r in rows):
        raise ImportProblem(f"{label}: rendered_frames: every row needs a whole frame number")
    frames_by_index = {int(r["frame"]): r for r in rows}
    if sorted(frames_by_index) != list(range(len(rows))):
        raise ImportProblem(f"{label}: rendered_frames: frames must be 0, 1, ... {len(rows) - 1}, each once")
    ordered = [frames_by_index[i] for i in range(len(rows))]
    count = len(ordered)
    job["num_frames"] = count
    options = manifest.get("options") or {}
    fps = _number(options.get("output_fps"))
    if fps is not None and 1 <= fps <= 240:
        job["fps"] = int(fps) if float(fps).is_integer() else fps
    _carry_cadence(job, "options.cadence", options.get("cadence"), notes)

    job["prompts"] = _parseq_prompts(ordered, label, notes)
    seeds = [_number(r.get("seed")) for r in ordered]
    if seeds[0] is not None:
        job["seed"] = int(seeds[0]) % 2**32
        job["noise_mode"] = "fixed" if all(s == seeds[0] for s in seeds) else "incremental"
        if job["noise_mode"] == "incremental":
            notes.append("changed: Parseq's per-frame seeds → noise_mode incremental from the first frame's seed")

    motion = _parseq_motion(ordered, label, notes)
    if motion:
        job["motion"] = motion
    strength = _series(ordered, "strength", label)
    if strength is not None:
        if min(strength) < 0 or max(strength) > 1:
            raise ImportProblem(f"{label}: rendered_frames: strength must be in [0, 1], got {min(strength):g} to "
                                f"{max(strength):g}")
        least = least_strength(steps)
        if any(1.0 - v < least for v in strength):
            notes.append(f"changed: strength keeps (nearly) whole frames: they run strength {least:g} here")
        job["strength"] = _per_frame([max(least, 1.0 - v) for v in strength], "strength", label)
        notes.append("changed: strength (the share kept) → 1 - strength per frame (the share of steps run)")
    noise = _series(ordered, "noise", label)
    if noise is not None and any(noise):
        notes.append("ignored: noise — Deforum adds pixel noise; here noise_scale 1 is the proper flow-matching mix")
    known = {"frame", "seed", "strength", "noise", "deforum_prompt", *PARSEQ_MOTION, *PARSEQ_3D}
    out.unused = sorted({k for r in ordered for k in r if k not in known and not k.endswith(("_delta", "_pc"))})
    return out


def _parseq_motion(ordered: list[Mapping[str, Any]], label: str, notes: list[str]) -> dict[str, Any]:
    """2D motion, or a 3d camera when the manifest moves one (its 3D series are not all at rest):
    exact per-frame schedules, the moves along the view axis scaled as for Deforum's settings."""
    series = {key: _series(ordered, key, label) for key in (*PARSEQ_MOTION, *PARSEQ_3D)}
    camera = any(v and any(x != 0 for x in v) for k, v in series.items() if k in DEFORUM_3D)
    motion: dict[str, Any] = {"mode": "3d"} if camera else {}
    moves = ("translation_x", "translation_y", *PARSEQ_3D) if camera else PARSEQ_MOTION
    if camera:
        for key in ("zoom", "angle"):
            rest = 1.0 if key == "zoom" else 0.0
            if series[key] and any(x != rest for x in series[key]):
                notes.append(f"ignored: {key} — not used in 3D mode (the manifest moves a 3D camera), "
                             "here as in Deforum")
        motion["depth"] = _deforum_depth({}, notes)  # the manifest names none: Deforum's 3D default warps by depth
        fov = series["fov"] or [DEFORUM_DEFAULT_FOV] * len(ordered)
        for key in ("translation_z", "rotation_3d_z"):
            if series[key] and any(series[key]) and all(0 < f < 180 for f in fov):
                series[key] = [x / math.tan(math.radians(f) / 2.0) for x, f in zip(series[key], fov)]
                notes.append(f"changed: {key} × 1/tan(fov/2) per frame (Deforum moves along the view axis that much "
                             "faster than a pinhole camera)")
    for key in moves:
        if series[key] is not None:
            motion[key] = _per_frame(series[key], key, label)
    return motion


def _series(rows: list[Mapping[str, Any]], key: str, label: str) -> list[float] | None:
    if not any(key in r for r in rows):
        return None
    values = [_number(r.get(key)) for r in rows]
    missing = [i for i, v in enumerate(values) if v is None or not math.isfinite(v)]
    if missing:
        raise ImportProblem(f"{label}: rendered_frames[{missing[0]}].{key}: expected a number, "
                            f"got {_show(rows[missing[0]].get(key))}")
    return [float(v) for v in values]  # type: ignore[arg-type]


def _per_frame(values: list[float], key: str, label: str) -> str:
    """An exact schedule: one numeric key a frame (repr: the float round-trips bit for bit); a run
    of equal values needs only its ends."""
    keys = [i for i, v in enumerate(values) if i in (0, len(values) - 1) or v != values[i - 1] or v != values[i + 1]]
    text = ", ".join(f"{i}:({values[i]!r})" for i in keys)
    if len(text) > MAX_SCHEDULE_LENGTH:
        raise ImportProblem(f"{label}: rendered_frames: {key} changes on {len(keys)} frames, a schedule of "
                            f"{len(text)} characters, more than one may hold ({MAX_SCHEDULE_LENGTH}): import the "
                            "manifest in parts (Parseq's frame range)")
    return text


def _parseq_prompts(rows: list[Mapping[str, Any]], label: str, notes: list[str]) -> dict[int, str]:
    prompts: dict[int, str] = {}
    negatives = False
    previous = None
    for i, row in enumerate(rows):
        text = row.get("deforum_prompt")
        if text is None:
            continue
        positive, _, negative = str(text).partition("--neg")
        negatives = negatives or bool(negative.strip())
        positive = " ".join(positive.split()) or "."
        if positive != previous:
            prompts[i] = positive
            previous = positive
    if not prompts:
        raise ImportProblem(f"{label}: rendered_frames: no deforum_prompt on any frame")
    if min(prompts) != 0:
        prompts = {0 if f == min(prompts) else f: p for f, p in prompts.items()}
    if negatives:
        notes.append("ignored: negative prompts ('--neg' parts) — FLUX here has no negative prompt")
    if any(" AND " in p or re.search(r":\s*[\d.]+\)", p) for p in prompts.values()):
        notes.append("changed: weighted or composed prompts (AND, (text:weight)) are read as plain text")
    return prompts


# ---------------------------------------------------------------------------------------------
# Writing and helpers


def imported_yaml(imported: Imported, source: str, header: str) -> str:
    """The job spec as YAML, under a comment header naming the source and what was not carried.

    Everything here came from a stranger's file (keys, values, prompts, its name): the body is
    written by a YAML emitter, and each comment line has its line breaks and other unprintable
    characters escaped, so no text can end a comment and start a setting. The result is read back
    as the spec loader reads it and must be the job tree exactly (:class:`ImportProblem` otherwise)."""
    lines = [f"# {header}", f"# Imported from {source} ({imported.kind}) by deforum-ray import."]
    lines += [f"# {note}" for note in imported.notes]
    if imported.unused:
        lines.append(f"# Not used here ({len(imported.unused)} settings of other tools): "
                     + ", ".join(imported.unused))
    comments = [_wrap_comment(printable(line)) for line in lines]
    text = "\n".join(comments) + "\n" + data_to_yaml(imported.job)
    try:
        written = parse_yaml(text, "the imported spec")
    except SpecError as exc:
        raise ImportProblem(f"{source}: {exc.errors[0]}") from None
    if written != imported.job:
        raise ImportProblem(f"{source}: the imported spec does not read back as written (a bug)")
    return text


def _wrap_comment(line: str, width: int = 100) -> str:
    if len(line) <= width:
        return line
    words, out, current = line[2:].split(" "), [], "#"
    for word in words:
        if len(current) + 1 + len(word) > width and current != "#":
            out.append(current)
            current = "#  "
        current += " " + word
    out.append(current)
    return "\n".join(out)


def _whole(value: Any, key: str, label: str, minimum: int = 0) -> int:
    number = _number(value)
    if number is None or not float(number).is_integer() or number < minimum:
        raise ImportProblem(f"{label}: {key}: expected a whole number >= {minimum}, got {_show(value)}")
    return int(number)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _format(value: float) -> str:
    return repr(round(value, 12)).rstrip("0").rstrip(".") if not float(value).is_integer() else repr(float(value))


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{printable(value)}"'
    return text if len(text) <= limit else text[: limit - 3] + "..."
