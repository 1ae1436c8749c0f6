"""Job specs: OmegaConf structured config (the dataclasses below), merged and validated.

Merge order: ``conf/defaults.yaml``, the model preset ``conf/model/<name>.yaml`` (the package's
``deforum_ray/conf``, or :func:`conf_dir`'s override), the job file,
then command-line ``key=value`` overrides. Validation runs on the merged tree before anything
else happens, collects every problem (one line each, naming the field), and touches nothing on
disk. Only a spec that passes becomes a :class:`JobSpec`; every clip in it carries its fully
resolved render settings (job-level values with the clip's own overrides on top).

This module imports no torch: the CLI validates a spec in well under a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import numpy as np
import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import first_line
from .choices import (CODECS, COLOR_MODES, COMPILE_MODES, COMPILE_SCOPES, DEPTH_PRESETS, FRAME_INTERPOLATIONS,
                      INTERPOLATION_METHODS, MOTION_MODES, NOISE_MODES, PADDINGS, PRECISIONS, RANDOM_MODEL_NAMES,
                      TRANSITIONS, WARP_INTERPOLATIONS)
from .frames import evaluate, lookup, scheduled_fields, start_indices
from .inputs import audio_problem, image_problem, local_path, within_timeout
from .limits import MAX_CLIP_FRAMES, MAX_JOB_FRAMES, MAX_SPEC_BYTES, MAX_SPEC_DEPTH, MAX_SPEC_NODES
from .schedule import ScheduleError

__all__ = [
    "ClipSpec",
    "ClusterSpec",
    "JobSpec",
    "ModelSpec",
    "MotionSpec",
    "OutputSpec",
    "PostSpec",
    "SpecError",
    "conf_dir",
    "load_job",
    "model_presets",
    "spec_to_yaml",
    "data_to_yaml",
]

# ---------------------------------------------------------------------------------------------
# Field rules, kept next to the fields they govern


@dataclass(frozen=True)
class Bounds:
    """A closed, open or half-open numeric range; ``None`` ends are unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        if self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi):
            return False
        return True

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def rule(
    default: Any = MISSING,
    *,
    bounds: Bounds | None = None,
    choices: Sequence[Any] | None = None,
    schedule: bool = False,
    factory: Any = None,
) -> Any:
    """A dataclass field with its validation rules in ``metadata``."""
    meta = {"bounds": bounds, "choices": tuple(choices) if choices else None, "schedule": schedule}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


UNIT_OPEN_LO = Bounds(0.0, 1.0, lo_open=True)
UNIT = Bounds(0.0, 1.0)
NON_NEGATIVE = Bounds(0.0)
POSITIVE = Bounds(0.0, lo_open=True)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # becomes a folder name in the store

# ---------------------------------------------------------------------------------------------
# The schema


@dataclass
class MotionSpec:
    zoom: str = rule(schedule=True, bounds=POSITIVE)
    angle: str = rule(schedule=True)
    translation_x: str = rule(schedule=True)
    translation_y: str = rule(schedule=True)
    interpolation: str = rule(choices=WARP_INTERPOLATIONS)
    padding: str = rule(choices=PADDINGS)
    # 3d: a camera that moves by Deforum's 3D schedules (units and signs: frame.motion.camera_matrix)
    mode: str = rule("2d", choices=MOTION_MODES)
    translation_z: str = rule("0:(0)", schedule=True, bounds=Bounds(hi=200.0, hi_open=True))
    rotation_3d_x: str = rule("0:(0)", schedule=True)
    rotation_3d_y: str = rule("0:(0)", schedule=True)
    rotation_3d_z: str = rule("0:(0)", schedule=True)
    fov: str = rule("0:(70)", schedule=True, bounds=Bounds(0.0, 180.0, lo_open=True, hi_open=True))
    near: str = rule("0:(200)", schedule=True, bounds=POSITIVE)
    far: str = rule("0:(10000)", schedule=True, bounds=POSITIVE)
    # none: a plane facing the camera; a depth model (a preset of choices.DEPTH_PRESETS, a Hugging Face
    # repo id or a folder) sees each frame's depth, and each latent cell moves by its own distance
    depth: str = rule("none")


# The camera's keys: they change no pixel in 2d (validation keeps them at rest there), so a 2d clip's
# job id leaves them out and stays what it was before 3d existed.
MOTION_3D_KEYS = ("mode", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "fov", "near", "far",
                  "depth")
# Motion that belongs to one mode only: (key, its value at rest, the mode it works in, what to use in the other)
MODE_ONLY_MOTION = (("zoom", 1.0, "2d", "motion.translation_z"), ("angle", 0.0, "2d", "motion.rotation_3d_z"),
                    ("translation_z", 0.0, "3d", "motion.zoom"), ("rotation_3d_x", 0.0, "3d", None),
                    ("rotation_3d_y", 0.0, "3d", None), ("rotation_3d_z", 0.0, "3d", "motion.angle"))


@dataclass
class ModelSpec:
    name: str = rule()
    source: str = rule()  # "tiny", "random:flux1-schnell" (full size, random), a Hugging Face repo id, or a folder
    transformer: Optional[str] = rule(None)  # a single .safetensors transformer file; the rest from source
    max_text_length: int = rule(512, bounds=Bounds(1, 512))
    shift_timesteps: Optional[bool] = rule(None)  # None: as the model's scheduler config says
    precision: str = rule("bf16", choices=PRECISIONS)  # fp8: float8 weights and matmuls in the blocks (GPU)


@dataclass
class RenderSettings:
    """The keys a clip may override; the job-level values are every clip's defaults."""

    seed: int = rule(bounds=Bounds(0, 2**32 - 1))
    steps: int = rule(bounds=Bounds(1, 1000))
    guidance: float = rule(bounds=NON_NEGATIVE)
    strength: str = rule(schedule=True, bounds=UNIT_OPEN_LO)
    noise_scale: str = rule(schedule=True, bounds=NON_NEGATIVE)
    noise_mode: str = rule(choices=NOISE_MODES)
    noise_delta: float = rule(bounds=UNIT)
    subseed: int = rule(bounds=Bounds(0, 2**32 - 1))
    subseed_strength: str = rule(schedule=True, bounds=UNIT)
    color_coherence: str = rule(choices=COLOR_MODES)
    motion: MotionSpec = rule(factory=MotionSpec)
    # Keyframe anchors (DESIGN.md section 3): 0 renders a clip as one chain; N cuts it at anchor
    # frames 0, N, 2N, ... whose segments render in parallel.
    segment_length: int = rule(bounds=Bounds(0))
    anchor_strength: float = rule(bounds=UNIT_OPEN_LO)  # re-diffusion of each anchor from the one before
    blend: Optional[int] = rule(None, bounds=Bounds(0))  # a segment's last frames eased toward the next anchor; None: all
    # Diffusion cadence (Deforum's turbo): N diffuses every N-th frame of each chain and its last;
    # the frames between are the diffused ones around them, warped to the frame and blended.
    cadence: int = rule(bounds=Bounds(1, MAX_CLIP_FRAMES))


@dataclass
class ClipSpec(RenderSettings):
    name: str = rule()
    num_frames: int = rule(bounds=Bounds(1, MAX_CLIP_FRAMES))
    prompts: dict[int, str] = rule()
    init_image: Optional[str] = rule(None)  # path or fsspec URI; in a job file, relative to its folder


@dataclass
class PostSpec:
    interpolation: int = rule(choices=FRAME_INTERPOLATIONS)  # frames out per frame rendered
    interpolation_method: str = rule(choices=INTERPOLATION_METHODS)
    loop: bool = rule()  # each clip plays forward, then back, so it loops seamlessly
    transition: str = rule(choices=TRANSITIONS)  # between clips
    crossfade_frames: int = rule(bounds=Bounds(1))  # output frames two clips overlap by
    contact_sheet_every: Optional[int] = rule(None, bounds=Bounds(1))  # None: about 24 thumbnails a clip


@dataclass
class OutputSpec:
    uri: str = rule()
    codec: str = rule(choices=CODECS)
    crf: int = rule(bounds=Bounds(0, 51))
    fps: Optional[float] = rule(None, bounds=Bounds(1.0, 960.0))  # None: fps x interpolation
    audio: Optional[str] = rule(None)  # path or URI (as init_image), muxed in and trimmed to the video
    # passed to fsspec, e.g. {endpoint_url: http://127.0.0.1:9000} for an S3-compatible store
    storage_options: dict[str, Any] = rule(factory=dict)


@dataclass
class ClusterSpec:
    address: Optional[str] = rule(None)
    connect_timeout: float = rule(60.0, bounds=Bounds(0.0, 3600.0, lo_open=True))  # seconds a cluster has to answer
    num_workers: Optional[int] = rule(None, bounds=Bounds(1, 4096))
    chains_per_worker: int = rule(bounds=Bounds(1, 64))
    checkpoint_every: int = rule(bounds=Bounds(1))
    cpu_threads: Optional[int] = rule(None, bounds=Bounds(1, 1024))  # torch threads of a CPU worker; null: cores / workers
    write_queue: int = rule(8, bounds=Bounds(0, 256))  # frames handed to a worker's store writer; 0: write in line
    compile: bool = rule(False)  # torch.compile the transformer (GPU workers; minutes the first time)
    compile_mode: str = rule("default", choices=COMPILE_MODES)
    compile_scope: str = rule("blocks", choices=COMPILE_SCOPES)  # blocks: each repeated block once; model: whole
    # a folder for Inductor's cache (warm starts on this machine) or any store URI (s3://...): the
    # compiled code is kept there too, and a new node loads it (render.compile_cache)
    compile_cache: Optional[str] = rule(None)


@dataclass
class JobSpec(RenderSettings):
    name: str = rule()
    model: ModelSpec = rule(factory=ModelSpec)
    width: int = rule(bounds=Bounds(16, 8192))
    height: int = rule(bounds=Bounds(16, 8192))
    fps: float = rule(bounds=Bounds(1.0, 240.0))  # below 1, ffmpeg's encoders fail after the whole render
    clips: list[ClipSpec] = rule()
    post: PostSpec = rule(factory=PostSpec)
    output: OutputSpec = rule(factory=OutputSpec)
    cluster: ClusterSpec = rule(factory=ClusterSpec)

    @property
    def total_frames(self) -> int:
        return sum(clip.num_frames for clip in self.clips)


RENDER_KEYS = tuple(f.name for f in dataclasses.fields(RenderSettings))
CLIP_ONLY_KEYS = tuple(f.name for f in dataclasses.fields(ClipSpec) if f.name not in RENDER_KEYS)
JOB_ONLY_KEYS = tuple(f.name for f in dataclasses.fields(JobSpec) if f.name not in RENDER_KEYS)
SHORTHAND_KEYS = ("prompts", "num_frames", "init_image")  # one clip, at top level


class SpecError(ValueError):
    """A spec that cannot be used; ``errors`` holds one line per problem, each naming its field."""

    def __init__(self, errors: Sequence[str], source: str = ""):
        self.errors = list(dict.fromkeys(errors))  # same problem seen from two clips: say it once
        self.source = source
        super().__init__("\n".join(self.errors))


# ---------------------------------------------------------------------------------------------
# Loading and merging


def conf_dir() -> Path:
    """Where the defaults and model presets are: ``$DEFORUM_RAY_CONF``, else a ``conf/`` folder with a
    ``defaults.yaml`` in the working directory (a studio's own), else the ones shipped in the package."""
    from importlib.resources import files

    env = os.environ.get("DEFORUM_RAY_CONF")
    if env:
        if not (Path(env) / "defaults.yaml").is_file():
            raise SpecError([f"conf: DEFORUM_RAY_CONF={env} has no defaults.yaml"])
        return Path(env)
    local = Path.cwd() / "conf"
    if (local / "defaults.yaml").is_file():
        return local
    return Path(str(files("deforum_ray") / "conf"))  # package data: a folder in any pip install


def model_presets(conf: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((conf or conf_dir()) / "model").glob("*.yaml"))


def preset_model(name: str) -> dict[str, Any] | None:
    """The ``model`` mapping of the preset ``name`` (``source``, ...), or None if there is none."""
    conf = conf_dir()
    if name not in model_presets(conf):
        return None
    return dict(_load_yaml(conf / "model" / f"{name}.yaml", f"conf/model/{name}.yaml").get("model") or {})


def _load_yaml(path: Path, label: str) -> dict[str, Any]:
    """A YAML mapping from a file, read through :func:`parse_yaml`'s bounds."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_SPEC_BYTES:  # refused before reading: a 50 MB file costs nothing
            raise SpecError([f"{label}: {size} bytes, more than a job spec may hold ({MAX_SPEC_BYTES})"], str(path))
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{label}: no such file"], str(path)) from None
    except IsADirectoryError:
        raise SpecError([f"{label}: is a folder, not a YAML file"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{label}: cannot read: {first_line(exc)}"], str(path)) from None
    raw = parse_yaml(text, label, source=str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([f"{label}: a job spec is a YAML mapping of keys, not {_kind(raw)}"], str(path))
    return raw


def _anchor_inputs(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A job file's inputs (init images, the audio track) named by a relative path are found next
    to the file, wherever the render runs from (``ray job submit``'s working folder, cron's home):
    they become absolute here. Overrides on the command line stay relative to the working folder.
    Values of the wrong type are left for validation to name."""

    def anchored(value: Any) -> Any:
        if not isinstance(value, str) or not value or "://" in value or Path(value).expanduser().is_absolute():
            return value  # a URI (file:// too), an absolute or home path, or a wrong type
        return str(folder / value)

    def clip(node: Any) -> Any:
        if isinstance(node, dict) and "init_image" in node:
            return {**node, "init_image": anchored(node["init_image"])}
        return node

    job = clip(job)  # a one-clip job names its init_image at the top
    if isinstance(job.get("clips"), list):
        job = {**job, "clips": [clip(node) for node in job["clips"]]}
    output = job.get("output")
    if isinstance(output, dict) and "audio" in output:
        job = {**job, "output": {**output, "audio": anchored(output["audio"])}}
    return job


def parse_yaml(text: str, label: str, source: str | None = None) -> Any:
    """The one way a job's YAML (a file, or an override's value) becomes data, bounded in size,
    in values once aliases are expanded and in depth (:mod:`.limits`), with no tags but YAML's
    own, duplicate keys refused, and no OmegaConf interpolation (``${...}``) anywhere: a spec is
    data, and a resolver could read the machine's environment. Errors name the file, line and
    column, or the value's path."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([f"{label}: {len(text)} characters, more than a job spec may hold ({MAX_SPEC_BYTES})"], source)
    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_tree(node, label, source)
        return _refuse_interpolations(loader.construct_document(node), label, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError([f"{where}: YAML syntax error: {problem}"], source) from None
    except RecursionError:  # the composer recurses per level: far deeper than MAX_SPEC_DEPTH
        raise SpecError([f"{label}: nested more than {MAX_SPEC_DEPTH} levels deep"], source) from None
    finally:
        loader.dispose()


def _check_node_tree(root: yaml.Node, label: str, source: str | None) -> None:
    """Count the values an alias-expanded tree would hold, and its depth, without building it."""
    stack, count = [(root, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_SPEC_NODES:
            raise SpecError([f"{label}: more than {MAX_SPEC_NODES} values once YAML aliases are expanded"], source)
        if depth > MAX_SPEC_DEPTH:
            where = f"{label}:{node.start_mark.line + 1}" if node.start_mark else label
            raise SpecError([f"{where}: nested more than {MAX_SPEC_DEPTH} levels deep"], source)
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def _refuse_interpolations(data: Any, label: str, source: str | None) -> Any:
    """Refuse ``${...}`` in any key or string, naming where (walked without recursion)."""
    errors: list[str] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack and len(errors) < 10:
        path, value = stack.pop()
        if isinstance(value, Mapping):
            for key, child in value.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "${" in key:
                    errors.append(f"{where}: '${{' in a key: a job spec is data, interpolations are not resolved")
                stack.append((where, child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(value))
        elif isinstance(value, str) and "${" in value:
            errors.append(f"{path or label}: '${{...}}' is not allowed: a job spec is data, interpolations are not "
                          "resolved (write '$ {' if you mean the characters)")
    if errors:
        raise SpecError(errors, source)
    return data


class StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (a silently dropped setting is a wrong render)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_loader() -> type:
    """OmegaConf's loader (YAML 1.2 floats like 1e-3, duplicate keys refused), wherever it lives."""
    for module in ("omegaconf._yaml", "omegaconf._utils"):
        try:
            get_yaml_loader = __import__(module, fromlist=["get_yaml_loader"]).get_yaml_loader
        except (ImportError, AttributeError):
            continue
        try:  # omegaconf >= 2.4 counts expanded nodes itself (10,000 by default): ours is MAX_SPEC_NODES
            return get_yaml_loader(max_yaml_expanded_nodes=None)
        except TypeError:
            return get_yaml_loader()
    return StrictLoader


def data_to_yaml(data: Any) -> str:
    """``data`` (plain mappings, lists, strings, numbers) as YAML that :func:`parse_yaml` reads
    back as ``data``: written by an emitter, never by pasting text, and a string the spec loader
    would read as something else (``1e3`` is a float in YAML 1.2, not in PyYAML's 1.1) is quoted."""
    return yaml.dump(data, Dumper=_spec_dumper(), sort_keys=False, allow_unicode=True, width=1_000_000)


def _spec_dumper() -> type:
    """A safe dumper that knows the spec loader's implicit types, so it quotes what they would take."""
    loader = _yaml_loader()

    class SpecDumper(yaml.SafeDumper):
        yaml_implicit_resolvers = {first: list(resolvers) for first, resolvers in
                                   loader.yaml_implicit_resolvers.items()}

    return SpecDumper


def _container(cfg: Any, label: str, resolve: bool = True) -> Any:
    try:
        return OmegaConf.to_container(cfg, resolve=resolve)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or label
        raise SpecError([f"{key}: {first_line(exc)}"]) from None


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """``key=value`` pairs; values are YAML (``seed=7`` is an int, ``motion.zoom="0:(1.0)"`` a string)."""
    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError([f"override '{item}': expected key=value, e.g. seed=7 or clips.0.num_frames=48"])
        if "${" in key:
            raise SpecError([f"override '{key}': '${{' in a key: a job spec is data, interpolations are not resolved"])
        value = parse_yaml(text, key) if text.strip() else ""
        pairs.append((key, value))
    return pairs


def _resolve_model(selection: Any, conf: Path, errors: list[str]) -> tuple[dict, dict | None]:
    """(job-level keys the preset sets, the model mapping) for ``model:`` as a name or a mapping.

    The mapping is None when the selection itself is wrong (already reported)."""
    presets = model_presets(conf)
    if isinstance(selection, str) or selection is None:
        name, extra = selection, {}
    elif isinstance(selection, Mapping):
        extra = dict(selection)
        name = extra.pop("preset", None)
        if name is None:  # a custom model: its own mapping over the schema's defaults
            extra.setdefault("name", Path(str(extra.get("source") or "custom")).name or "custom")
            return {}, extra
    else:
        errors.append(f"model: expected a preset name ({', '.join(presets)}) or a mapping, got {_kind(selection)}")
        return {}, None
    if name not in presets:
        key = "model.preset" if extra else "model"
        errors.append(f"{key}: unknown model preset {name!r}{_suggest(str(name), presets)} (known: {', '.join(presets)})")
        return {}, None
    settings = _load_yaml(conf / "model" / f"{name}.yaml", f"conf/model/{name}.yaml")
    mapping = dict(settings.pop("model", None) or {})
    mapping.update(extra)
    return settings, mapping


def _check_sections(layer: dict[str, Any], defaults: Mapping[str, Any], path: str, errors: list[str]) -> None:
    """A key that is a mapping in the defaults (``motion``, ``output.storage_options``, ...) must be
    one in the job too: report it and drop it, so the merge never meets a list where a mapping is."""
    for key in list(layer):
        default, value = defaults.get(key), layer[key]
        if key == "model" or not isinstance(default, Mapping) or value is None:
            continue
        if not isinstance(value, Mapping):
            errors.append(f"{_join(path, key)}: expected a mapping of settings, got {_kind(value)}")
            del layer[key]
        else:
            layer[key] = dict(value)
            _check_sections(layer[key], default, _join(path, key), errors)


def _is_section(defaults: Mapping[str, Any], key: str) -> bool:
    """Whether the dotted ``key`` names a mapping of settings in the defaults (``motion``, ``output``)."""
    node: Any = defaults
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return isinstance(node, Mapping)


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    return _container(OmegaConf.merge(*(OmegaConf.create(dict(layer)) for layer in layers)), "spec", resolve=False)


def load_job(
    source: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    conf: Path | None = None,
    check_paths: bool = True,
) -> JobSpec:
    """Merge defaults, model preset, the job (a YAML path or a mapping) and overrides; validate.

    Raises :class:`SpecError` with every problem found. ``check_paths=False`` skips the checks
    that look at the file system (init images, output URI), e.g. on a machine that only plans.
    """
    conf = conf or conf_dir()
    label = str(source) if not isinstance(source, Mapping) else "<job>"
    if isinstance(source, Mapping):
        job = _refuse_interpolations(dict(source), label, None)
    else:
        job = _anchor_inputs(_load_yaml(Path(source), label), Path(source).resolve().parent)
    pairs = parse_overrides(overrides)
    errors: list[str] = []

    defaults = _load_yaml(conf / "defaults.yaml", "conf/defaults.yaml")
    _check_sections(job, defaults, "", errors)
    model_override = [value for key, value in pairs if key == "model"]
    selection = model_override[-1] if model_override else job.get("model", defaults.get("model"))
    preset_settings, model_mapping = _resolve_model(selection, conf, errors)

    strip = lambda layer: {k: v for k, v in layer.items() if k != "model"}  # noqa: E731
    merged = _merge(strip(defaults), strip(preset_settings), strip(job))
    if model_mapping is not None:
        merged["model"] = model_mapping
    cfg = OmegaConf.create(merged)
    shorthand = "clips" not in merged and any(k in merged for k in SHORTHAND_KEYS)
    for key, value in pairs:
        if shorthand:  # a one-clip job has no clips list: clips.0.x means its top-level x
            key = re.sub(r"^clips(\.0|\[0\])\.", "", key)
        if key == "model" or (model_mapping is None and key.startswith("model.")):
            continue
        try:
            if _is_section(defaults, key) and value is not None and not isinstance(value, Mapping):
                errors.append(f"{key}: expected a mapping of settings, got {_kind(value)}")  # as in a file
                continue
            OmegaConf.update(cfg, key, value, merge=True)
        except (OmegaConfBaseException, ValueError, KeyError, IndexError, TypeError) as exc:
            errors.append(f"{key}: cannot apply override: {first_line(exc)}")
    tree = _container(cfg, label)

    spec = _validate(tree, errors, check_paths=check_paths, model_known=model_mapping is not None)
    if errors or spec is None:
        raise SpecError(errors, label)
    return spec


# ---------------------------------------------------------------------------------------------
# Validation


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_value(value: Any, tp: Any, meta: Mapping[str, Any], path: str, errors: list[str]) -> Any:
    """Type check one value against its annotation; returns the cleaned value or None."""
    if get_origin(tp) is Union:
        inner = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(value, inner[0], meta, path, errors)
    if value is None or value == MISSING:
        errors.append(f"{path}: missing value")
        return None
    if dataclasses.is_dataclass(tp):
        return _check_mapping(value, tp, path, errors)
    if get_origin(tp) is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {_kind(value)}")
            return None
        (item_tp,) = get_args(tp)
        return [_check_value(v, item_tp, {}, _join(path, i), errors) for i, v in enumerate(value)]
    if get_origin(tp) is dict:
        if get_args(tp)[0] is int:
            return _check_prompts(value, path, errors)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            errors.append(f"{path}: expected a mapping of names to values, got {_kind(value)}")
            return None
        return dict(value)
    if meta.get("schedule"):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            errors.append(f"{path}: expected a number or a schedule string like \"0:(1.0), 60:(1.1)\", got {_kind(value)}")
            return None
        return value if isinstance(value, str) else repr(float(value))
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {_kind(value)}")
            return None
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            errors.append(f"{path}: expected a whole number, got {_kind(value)}")
            return None
        value = int(value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            errors.append(f"{path}: expected a number, got {_kind(value)}")
            return None
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {_kind(value)}")
            return None
        if not value.strip():
            errors.append(f"{path}: must not be empty")
            return None
    choices = meta.get("choices")
    if choices and value not in choices:
        listed = ", ".join(str(c) for c in choices)
        hint = _suggest(str(value), [str(c) for c in choices])
        errors.append(f"{path}: {value!r} is not one of {listed}{hint}")
        return None
    bounds: Bounds | None = meta.get("bounds")
    if bounds is not None and value not in bounds:
        errors.append(f"{path}: must be {bounds}, got {value}")
        return None
    return value


def _check_mapping(value: Any, cls: type, path: str, errors: list[str], skip: Sequence[str] = ()) -> Any:
    if not isinstance(value, Mapping):
        errors.append(f"{path or 'spec'}: expected a mapping, got {_kind(value)}")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields and key not in skip:
            errors.append(f"{_join(path, str(key))}: unknown key{_suggest(str(key), fields)}")
    out = {}
    for name, f in fields.items():
        if name in skip:
            continue
        if name not in value:
            if f.default is MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                errors.append(f"{_join(path, name)}: missing value")
            continue
        out[name] = _check_value(value[name], hints[name], f.metadata, _join(path, name), errors)
    return out


def _check_prompts(value: Any, path: str, errors: list[str]) -> dict[int, str] | None:
    if isinstance(value, Mapping) and not value:
        errors.append(f"{path}: no prompts; give at least one frame: prompt, e.g. {{0: \"a lighthouse at dusk\"}}")
        return None
    if not isinstance(value, Mapping):
        errors.append(f"{path}: expected a mapping of frame: prompt, e.g. {{0: \"a lighthouse at dusk\"}}, got {_kind(value)}")
        return None
    prompts: dict[int, str] = {}
    for key, text in value.items():
        where = f"{path}.{key}"
        frame = key if isinstance(key, int) and not isinstance(key, bool) else None
        if isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():
            frame = int(key)
        if frame is None or frame < 0:
            errors.append(f"{where}: prompt keys are frame numbers >= 0, got {_kind(key)}")
            continue
        if not isinstance(text, str) or not text.strip():
            errors.append(f"{where}: expected a non-empty prompt string, got {_kind(text)}")
            continue
        if frame in prompts:
            errors.append(f"{where}: frame {frame} has two prompts")
            continue
        prompts[frame] = text
    return dict(sorted(prompts.items()))


def _clip_trees(tree: dict[str, Any], errors: list[str]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, raw clip mapping, clip with job-level render settings merged under it) per clip."""
    shorthand = {k: tree.pop(k) for k in SHORTHAND_KEYS if k in tree}
    clips = tree.pop("clips", None)
    if shorthand:
        if clips:
            errors.append(f"{next(iter(shorthand))}: give either clips or top-level prompts + num_frames, not both")
            return []
        clips = [{"name": tree.get("name"), **shorthand}]
    if clips is None or clips == []:
        errors.append("clips: no clips; give clips: [...] or prompts + num_frames for one clip")
        return []
    if not isinstance(clips, list):
        errors.append(f"clips: expected a list of clips, got {_kind(clips)}")
        return []
    render_defaults = {k: tree[k] for k in RENDER_KEYS if k in tree}
    out = []
    for i, clip in enumerate(clips):
        path = "" if shorthand else f"clips[{i}]"
        if not isinstance(clip, Mapping):
            errors.append(f"clips[{i}]: expected a mapping with name, num_frames and prompts, got {_kind(clip)}")
            continue
        for key in clip:
            if key in JOB_ONLY_KEYS and key != "name":
                errors.append(f"{_join(path, key)}: is set for the whole job only (one video, one model, one size)")
        raw = {k: v for k, v in clip.items() if k not in JOB_ONLY_KEYS or k == "name"}
        merged = {**render_defaults, **raw}
        if isinstance(raw.get("motion"), Mapping) and isinstance(render_defaults.get("motion"), Mapping):
            merged["motion"] = {**render_defaults["motion"], **raw["motion"]}  # per-key, not wholesale
        out.append((path, raw, merged))
    return out


def _validate(tree: dict[str, Any], errors: list[str], *, check_paths: bool, model_known: bool = True) -> JobSpec | None:
    clip_trees = _clip_trees(tree, errors)
    job = _check_mapping(tree, JobSpec, "", errors, skip=("clips",) if model_known else ("clips", "model"))
    clips = []
    for path, raw, merged in clip_trees:
        before = len(errors)
        clip = _check_mapping(merged, ClipSpec, path, errors)
        # Errors in inherited keys were reported against the job-level key already.
        errors[before:] = [_attribute(e, path, raw) for e in errors[before:]]
        clips.append((path, raw, clip))
    if job is None:
        return None

    _check_names(job, clips, errors)
    for path, raw, clip in clips:
        if clip is not None:
            _check_clip(job, path, raw, clip, errors, check_paths=check_paths)
    for key in ("width", "height"):
        if isinstance(job.get(key), int) and job[key] % 16:
            errors.append(f"{key}: must be a multiple of 16 (8x VAE, then 2x2 patches), got {job[key]}")
    _check_crossfade(job, clips, errors)
    total = sum(clip["num_frames"] for _, _, clip in clips if clip and isinstance(clip.get("num_frames"), int))
    if total > MAX_JOB_FRAMES:
        errors.append(f"clips: {total:,} frames in all, more than the {MAX_JOB_FRAMES:,} a job may have")
    if check_paths:
        _check_model_paths(job.get("model"), errors)
        if job.get("output"):
            _check_output_uri(job["output"].get("uri"), errors)
            if job["output"].get("audio"):
                _check_audio(job["output"]["audio"], "output.audio", errors)
    if errors:
        return None

    job["clips"] = [clip for _, _, clip in clips]
    cfg = OmegaConf.merge(OmegaConf.structured(JobSpec), job)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _attribute(error: str, path: str, raw: Mapping[str, Any]) -> str:
    """Name the job-level key when a clip only inherited the bad value."""
    if not path or not error.startswith(path + "."):
        return error
    rest = error[len(path) + 1 :]
    key = re.split(r"[.:\[]", rest, maxsplit=1)[0]
    if key in RENDER_KEYS and key not in raw:
        return rest
    if key == "motion" and isinstance(raw.get("motion"), Mapping):
        sub = re.split(r"[.:\[]", rest[len("motion.") :], maxsplit=1)[0]
        if sub not in raw["motion"]:
            return rest
    return error


def _check_names(job: dict[str, Any], clips: list[tuple[str, Any, Any]], errors: list[str]) -> None:
    name = job.get("name")
    if isinstance(name, str) and not NAME_PATTERN.match(name):
        errors.append(f"name: {name!r} must be letters, digits, '.', '_' or '-' (it names the output folder)")
    seen: dict[str, str] = {}
    for path, _, clip in clips:
        clip_name = (clip or {}).get("name")
        if not isinstance(clip_name, str):
            continue
        where = _join(path, "name")
        if not NAME_PATTERN.match(clip_name):
            errors.append(f"{where}: {clip_name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
        elif clip_name in seen:
            errors.append(f"{where}: clip name {clip_name!r} is already used by {seen[clip_name]}")
        else:
            seen[clip_name] = where


def _schedule_path(path: str, raw: Mapping[str, Any], key: str) -> str:
    """Where a schedule was written: on the clip, or inherited from the job level."""
    parts = key.split(".")
    node: Any = raw
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return key
        node = node[part]
    return _join(path, key)


def _check_clip(
    job: dict[str, Any], path: str, raw: Mapping[str, Any], clip: dict[str, Any], errors: list[str], *, check_paths: bool
) -> None:
    num_frames = clip.get("num_frames")
    seed = clip.get("seed") if isinstance(clip.get("seed"), int) else 0  # a bad seed is reported already
    label = f"clip {clip.get('name')!r}"
    if isinstance(clip.get("prompts"), dict) and isinstance(num_frames, int):
        for frame in clip["prompts"]:
            if frame >= num_frames:
                where = f"{_join(path, 'prompts')}.{frame}"
                errors.append(f"{where}: prompt key {frame} is past the clip's last frame {num_frames - 1}")
    if not isinstance(num_frames, int):
        return
    values: dict[str, np.ndarray] = {}
    for key, f in scheduled_fields(RenderSettings):
        text, bounds = lookup(clip, key), f.metadata.get("bounds")
        if not isinstance(text, str):
            continue
        where = _schedule_path(path, raw, key)
        try:
            values[key] = arr = evaluate(text, num_frames, seed)
        except ScheduleError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if bounds is not None:
            bad = [i for i, v in enumerate(arr) if v not in bounds]
            if bad:
                errors.append(f"{where}: must be {bounds}, but is {arr[bad[0]]:g} at frame {bad[0]} of {label}")
    steps = clip.get("steps")
    if "strength" in values and isinstance(steps, int):
        _check_strength_runs_a_step(values["strength"], steps, clip.get("init_image") is not None,
                                    _schedule_path(path, raw, "strength"), label, errors)
    _check_segments(path, raw, clip, label, errors)
    _check_motion_mode(path, raw, clip, values, label, errors)
    _check_depth(path, raw, clip, label, errors, check_paths=check_paths)
    if check_paths and clip.get("init_image"):
        _check_init_image(clip["init_image"], _join(path, "init_image"), errors)


def _check_motion_mode(path: str, raw: Mapping[str, Any], clip: dict[str, Any], values: Mapping[str, np.ndarray],
                       label: str, errors: list[str]) -> None:
    """Each mode's motion stays at rest in the other mode (it would be silently ignored), and a
    3d camera's near plane lies before its far plane."""
    mode = (clip.get("motion") or {}).get("mode", "2d")
    if mode not in MOTION_MODES:
        return  # reported as a bad choice already
    for key, rest, works_in, instead in MODE_ONLY_MOTION:
        arr = values.get(f"motion.{key}")
        if arr is None or works_in == mode:
            continue
        moving = np.flatnonzero(arr != rest)
        if moving.size:
            use = f" (in {mode}: {instead})" if instead else ""
            errors.append(f"{_schedule_path(path, raw, f'motion.{key}')}: moves only in motion.mode {works_in}; "
                          f"{label} is {mode} and it is {arr[moving[0]]:g} at frame {moving[0]}{use}")
    near, far = values.get("motion.near"), values.get("motion.far")
    if mode == "3d" and near is not None and far is not None:
        bad = np.flatnonzero(near >= far)
        if bad.size:
            errors.append(f"{_schedule_path(path, raw, 'motion.near')}: must be < motion.far, but is "
                          f"{near[bad[0]]:g} >= {far[bad[0]]:g} at frame {bad[0]} of {label}")


REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_depth(path: str, raw: Mapping[str, Any], clip: dict[str, Any], label: str, errors: list[str], *,
                 check_paths: bool) -> None:
    """``motion.depth``: none, a preset, a Hugging Face repo id or a folder, in 3d only."""
    motion = clip.get("motion") or {}
    depth, mode = motion.get("depth"), motion.get("mode", "2d")
    if not isinstance(depth, str) or depth == "none":
        return
    where = _schedule_path(path, raw, "motion.depth")
    if mode == "2d":
        errors.append(f"{where}: a depth model moves only a motion.mode 3d camera; {label} is 2d "
                      f"(set motion.mode: 3d, or motion.depth: none)")
    elif depth in DEPTH_PRESETS:
        return
    elif REPO_ID.match(depth) and not Path(depth).expanduser().exists():
        return  # a repo id, from the local Hugging Face cache
    elif "/" in depth or Path(depth).expanduser().exists():
        if check_paths and not Path(depth).expanduser().is_dir():
            errors.append(f"{where}: no depth model folder at {depth!r}")
    else:
        errors.append(f"{where}: unknown depth model {depth!r}{_suggest(depth, list(DEPTH_PRESETS))}; expected none, "
                      f"{', '.join(DEPTH_PRESETS)}, a Hugging Face repo id (org/name) or a folder")


def _check_segments(path: str, raw: Mapping[str, Any], clip: dict[str, Any], label: str, errors: list[str]) -> None:
    """Anchors need room to blend, and their re-diffusion must run at least one step. Resolves
    ``blend: null`` to the whole segment after its anchor, so the resolved spec says what renders."""
    if clip.get("blend") is None and isinstance(clip.get("segment_length"), int):
        clip["blend"] = max(clip["segment_length"] - 1, 0)
    length, blend, strength, steps = (clip.get(k) for k in ("segment_length", "blend", "anchor_strength", "steps"))
    if not all(isinstance(v, int) for v in (length, blend)) or not length:
        return
    if blend >= length:
        where = _join(path, "blend") if "blend" in raw else "blend"
        errors.append(f"{where}: must be < segment_length ({length}) so that a segment starts on its own anchor, "
                      f"got {blend} for {label}")
    if isinstance(strength, (int, float)) and isinstance(steps, int):
        if steps - start_indices(np.array([float(strength)]), steps)[0] < 1:
            where = _join(path, "anchor_strength") if "anchor_strength" in raw else "anchor_strength"
            errors.append(f"{where}: {strength:g} runs 0 of {steps} steps for {label}; "
                          f"use an anchor_strength above {0.5 / steps:g} or more steps")


def _check_strength_runs_a_step(strength: np.ndarray, steps: int, has_init: bool, where: str, label: str,
                                errors: list[str]) -> None:
    """A frame whose strength rounds to zero steps would only be warped, never denoised."""
    passes = steps - start_indices(strength, steps)
    first = 0 if has_init else 1  # without an init image frame 0 runs every step from noise
    zero = [i for i in range(first, len(passes)) if passes[i] < 1]
    if zero:
        frame = zero[0]
        errors.append(
            f"{where}: {strength[frame]:g} at frame {frame} of {label} runs 0 of {steps} steps; "
            f"use a strength above {0.5 / steps:g} or more steps"
        )


def clip_output_frames(num_frames: int, interpolation: int, loop: bool) -> int:
    """Frames a clip of ``num_frames`` becomes: interpolated ``(n - 1) * k + 1``, then looped
    ``2m - 2`` (forward, then back without repeating either end)."""
    m = (num_frames - 1) * interpolation + 1
    return 2 * m - 2 if loop and m > 2 else m


def _check_crossfade(job: Mapping[str, Any], clips: list[tuple[str, Any, Any]], errors: list[str]) -> None:
    """A crossfade overlaps neighbouring clips; it must fit in half of every clip."""
    post = job.get("post") or {}
    if post.get("transition") != "crossfade" or len(clips) < 2:
        return
    fade, k, loop = post.get("crossfade_frames"), post.get("interpolation"), post.get("loop")
    if not all(isinstance(v, int) for v in (fade, k)):
        return
    for _, _, clip in clips:
        if clip and isinstance(clip.get("num_frames"), int):
            frames = clip_output_frames(clip["num_frames"], k, bool(loop))
            if fade > frames // 2:
                errors.append(f"post.crossfade_frames: {fade} is more than half of clip {clip.get('name')!r} "
                              f"({frames} frames after interpolation and loop)")


def _check_init_image(uri: str, where: str, errors: list[str]) -> None:
    problem = within_timeout(lambda: image_problem(uri), uri)
    if problem:
        errors.append(f"{where}: {problem}")


def _check_audio(uri: str, where: str, errors: list[str]) -> None:
    problem = within_timeout(lambda: audio_problem(uri), uri)
    if problem:
        errors.append(f"{where}: {problem}")


def _check_output_uri(uri: Any, errors: list[str]) -> None:
    """Writable without writing anything: the nearest existing folder must accept new entries."""
    if not isinstance(uri, str):
        return
    path = local_path(uri)
    if path is None:
        import fsspec

        protocol = uri.split("://", 1)[0]
        if protocol == "memory":
            errors.append(f"output.uri: {uri!r} lives in one process's memory, which Ray's workers cannot share; "
                          "use a folder or s3://")
            return
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            errors.append(f"output.uri: unknown storage protocol {protocol!r} in {uri!r}")
        except ImportError as exc:
            errors.append(f"output.uri: {protocol}:// needs a package that is not installed ({first_line(exc)})")
        return
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        errors.append(f"output.uri: {str(probe)!r} is a file, not a folder")
    elif not os.access(probe, os.W_OK | os.X_OK):
        errors.append(f"output.uri: cannot write under {str(probe)!r} (permission denied)")


def _check_model_paths(model: Any, errors: list[str]) -> None:
    if not isinstance(model, dict):
        return
    source, transformer = model.get("source"), model.get("transformer")
    if isinstance(source, str) and source.startswith("random:"):
        if source[len("random:"):] not in RANDOM_MODEL_NAMES:
            errors.append(f"model.source: unknown random model {source!r}; one of "
                          f"{', '.join('random:' + name for name in RANDOM_MODEL_NAMES)}")
    elif isinstance(source, str) and source != "tiny" and _looks_like_path(source):
        if not Path(source).expanduser().is_dir():
            errors.append(f"model.source: no model folder at {source!r}")
    if isinstance(transformer, str):
        if not transformer.endswith(".safetensors"):
            errors.append(f"model.transformer: expected a .safetensors file, got {transformer!r}")
        elif local_path(transformer) is not None and not local_path(transformer).is_file():  # type: ignore[union-attr]
            errors.append(f"model.transformer: no such file {transformer!r}")


def _looks_like_path(source: str) -> bool:
    """A Hugging Face repo id is ``org/name``; anything else that names a place is a folder."""
    return (
        source.startswith(("/", "./", "../", "~", "file://"))
        or Path(source).expanduser().exists()
        or source.count("/") != 1
    )


# ---------------------------------------------------------------------------------------------
# Output


def spec_to_yaml(spec: JobSpec) -> str:
    """The resolved spec as YAML (what ``plan --show`` prints and the store keeps)."""
    return OmegaConf.to_yaml(OmegaConf.structured(spec))


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(spec))  # type: ignore[return-value]
