"""``deforum-ray import``: classic Deforum settings files and Parseq manifests become job specs.

The schedules are checked against :func:`deforum_inbetweens`, a reference written from classic
Deforum's ``FrameInterpolater.parse_key_frames``/``get_inbetweens``
(deforum-art/sd-webui-deforum ``scripts/deforum_helpers/animation_key_frames.py``), on real
settings files from public repositories (tests/data/deforum/SOURCES.md).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import render_here
from deforum_ray.job.frames import ClipFrames
from deforum_ray.job.importers import ImportProblem, from_deforum, from_parseq, import_file, least_strength
from deforum_ray.job.schedule import parse_schedule
from deforum_ray.job.spec import load_job, parse_yaml

DATA = Path(__file__).parent / "data" / "deforum"
SETTINGS = sorted(p for p in DATA.glob("*.txt"))
FUNCTIONS = {name: getattr(math, name) for name in ("sin", "cos", "tan", "sqrt", "exp", "log", "floor", "ceil")}


# --- the reference: classic Deforum's keyframe evaluation, read from its code ---------------------


def _is_number(text: str) -> bool:  # Deforum's check_is_number
    return re.match(r"^(?=.)([+-]?([0-9]*)(\.([0-9]+))?)$", text) is not None


def _sanitize(text: str) -> str:  # Deforum's sanitize_value
    return text.replace("'", "").replace('"', "").replace("(", "").replace(")", "")


def _numexpr(expression: str, **names: float) -> float:
    """What numexpr.evaluate gives for these small arithmetic expressions (test data only)."""
    return float(eval(expression, {"__builtins__": {}}, {**FUNCTIONS, "abs": abs, "pi": math.pi, **names}))


def deforum_inbetweens(schedule: str, max_frames: int, seed: int) -> list[float]:
    """``parse_key_frames`` then ``get_inbetweens``, as Deforum runs them, quirks included: an
    expression key holds until the next key (its ``value_is_number`` is stale on the frames
    between), keys outside 0 .. max_frames-1 are never read, a repeated key keeps its last value,
    and the ends are pinned to the first and last known values before linear interpolation."""
    max_f = max_frames - 1
    keys: dict[int, str] = {}
    for part in schedule.split(","):
        if not part.strip():
            continue
        frame_text, value = part.split(":")
        if _is_number(_sanitize(frame_text.strip())):
            frame = int(_sanitize(frame_text))
        else:
            stripped = frame_text.strip().replace("'", "", 1).replace('"', "", 1)[::-1]
            stripped = stripped.replace("'", "", 1).replace('"', "", 1)[::-1]
            frame = int(_numexpr(stripped, max_f=max_f, s=seed))
        keys[frame] = value.strip()
    series = [math.nan] * max_frames
    value, value_is_number = "", True
    for i in range(max_frames):
        if i in keys:
            value = keys[i]
            value_is_number = _is_number(_sanitize(value))
            if value_is_number:
                series[i] = float(_sanitize(value))
        if not value_is_number:
            series[i] = _numexpr(value, t=i, max_f=max_f, s=seed)
    known = [i for i, v in enumerate(series) if not math.isnan(v)]
    series[0], series[-1] = series[known[0]], series[known[-1]]
    known = [i for i, v in enumerate(series) if not math.isnan(v)]
    return list(np.interp(np.arange(max_frames), known, [series[i] for i in known]))


def numeric_schedules(settings: dict) -> dict[str, str]:
    """Every schedule of a settings file whose values are numbers or arithmetic (not sampler names)."""
    return {key: value for key, value in settings.items()
            if isinstance(value, str) and re.match(r"^\s*(\d+|\"[^\"]+\"|'[^']+')\s*:\s*\(", value)
            and '("' not in value.replace(" ", "") and "{" not in value}


# --- the grammar agrees with Deforum ------------------------------------------------------------


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: p.name)
def test_every_schedule_of_a_real_settings_file_gives_deforums_values(path):
    settings = json.loads(path.read_text())
    frames, seed = int(settings["max_frames"]), 7
    schedules = numeric_schedules(settings)
    assert len(schedules) >= 20  # zoom, angle, translations, strength, noise, seed, fov, ...
    for key, text in schedules.items():
        expected = deforum_inbetweens(text, frames, seed)
        np.testing.assert_allclose(parse_schedule(text, frames, seed), expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{path.name}: {key} = {text}")


@pytest.mark.parametrize("text", [
    '0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)',  # Deforum's default seed_schedule
    "0:(1.0025+0.002*sin(1.25*3.14*t/30))",
    "0: (0), 10: (5), 10: (2), 30: (-3)",  # a repeated key: the last wins
    "0:(0), 20:(sin(t/3)), 40:(1), 80:(0.5), 300:(9)",  # an expression holds until the next key; 300 is outside
    "0: (1), 'max_f/4-5':(2), \"max_f/2\":(cos(t/7)), 3*12:(0.25)",  # expression keys, and 3*12 read as 36
    "0:(-0.06*(cos(3.141*t/15)**100)+0.06)",
    "5:(2), 0:(1), 60:(4)",  # keys in any order
])
@pytest.mark.parametrize("frames", [1, 7, 61, 120])
def test_deforum_style_schedules_give_deforums_values(text, frames):
    expected = deforum_inbetweens(text.replace("3*12", '"3*12"'), frames, 11)
    np.testing.assert_allclose(parse_schedule(text.replace("3*12", '"3*12"'), frames, 11), expected,
                               rtol=1e-12, atol=1e-12)


# --- settings files import and validate ---------------------------------------------------------


def import_here(capsys, *args: str) -> tuple[int, str, str]:
    from deforum_ray.cli import main

    capsys.readouterr()
    code = main(["import", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: p.name)
def test_a_real_settings_file_imports_into_a_spec_that_validates(path, tmp_path, capsys):
    out = tmp_path / "job.yaml"
    code, stdout, err = import_here(capsys, str(path), "-o", str(out))
    assert code == 0, err
    text = out.read_text()
    assert text.startswith("# deforum-ray job spec") and f"Imported from {path}" in text.splitlines()[1]
    spec = load_job(out)
    settings = json.loads(path.read_text())
    frames = int(settings["max_frames"])
    assert spec.total_frames == frames and stdout.splitlines()[-1].startswith(f"wrote {out}: Deforum settings")
    clip = spec.clips[0]
    values = ClipFrames.of(clip)
    kept = deforum_inbetweens(settings["strength_schedule"], frames, clip.seed)
    np.testing.assert_allclose(values["strength"], np.maximum(1 - np.array(kept), least_strength(clip.steps)), atol=1e-12)
    if settings.get("animation_mode") == "3D":
        assert clip.motion.mode == "3d" and (values["motion.zoom"] == 1).all() and (values["motion.angle"] == 0).all()
        fov = deforum_inbetweens(settings["fov_schedule"], frames, clip.seed)
        np.testing.assert_allclose(values["motion.fov"], fov, rtol=1e-12)
        along_view_axis = 1 / math.tan(math.radians(fov[0]) / 2)  # Deforum's z moves, as a pinhole's (README)
        scale = {"translation_z": along_view_axis, "rotation_3d_z": along_view_axis}
        moves = ("translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z")
    else:
        assert clip.motion.mode == "2d"
        scale, moves = {}, ("zoom", "angle", "translation_x", "translation_y")
    for key in moves:
        expected = np.array(deforum_inbetweens(settings[key], frames, clip.seed)) * scale.get(key, 1.0)
        np.testing.assert_allclose(values[f"motion.{key}"], expected, rtol=1e-9, atol=1e-12, err_msg=key)
    for line in stdout.splitlines()[:-1]:  # each note is one line naming its setting
        assert re.match(r"^(ignored|changed): \S+", line), line


def test_deforums_default_settings_say_what_did_not_carry_over(tmp_path, capsys):
    out = tmp_path / "default.yaml"
    code, stdout, _ = import_here(capsys, str(DATA / "deforum-default_settings.txt"), "-o", str(out))
    assert code == 0
    lines = stdout.splitlines()
    seed = load_job(out).seed
    assert f"changed: seed -1 (a new random seed each run) → {seed}, fixed so that the render repeats" in lines
    assert ('changed: translation_z "0: (1.75)" → "0:(2.499259011799)" (×1.428: Deforum moves along the view axis '
            '1/tan(fov/2) times faster than a pinhole camera, at fov 70)') in lines
    assert "changed: depth_algorithm Midas-3-Hybrid → depth depth-anything-v2-small (the depth model here, its map " \
        "scaled to distances 1 to 2; fetch it once: deforum-ray fetch-model depth-anything-v2-small)" in lines
    assert load_job(out).clips[0].motion.depth == "depth-anything-v2-small"
    assert load_job(out).clips[0].cadence == 2
    assert ("changed: diffusion_cadence 2 → cadence 2 (each frame between two diffused ones blends both, warped to "
            "it; Deforum's blends the two before it)") in lines
    assert any(line.startswith("ignored: noise_schedule") for line in lines)
    assert 'changed: strength_schedule "0: (0.65)" (the share kept) → strength "0:(0.35)" (the share of steps run)' \
        in lines
    assert any(line.startswith("ignored: negative prompts") for line in lines)
    job = yaml.safe_load(out.read_text())
    assert job["prompts"][0].startswith("tiny cute swamp bunny") and "--neg" not in job["prompts"][0]
    assert sorted(job["prompts"]) == [0, 30, 60, 90]
    assert job["color_coherence"] == "match_first" and job["motion"]["padding"] == "border"
    assert (job["width"], job["height"], job["fps"], job["noise_mode"]) == (512, 512, 15, "incremental")
    assert "# Not used here (206 settings of other tools): " in out.read_text()  # every one named in the header


def test_a_spec_is_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "job.yaml"
    out.write_text("mine\n")
    code, _, err = import_here(capsys, str(DATA / "deforum-simple.input_settings.txt"), "-o", str(out))
    assert code == 2 and out.read_text() == "mine\n"
    assert err.strip() == f"deforum-ray import: {out} exists; give --force to replace it, or -o another file"
    code, _, _ = import_here(capsys, str(DATA / "deforum-simple.input_settings.txt"), "-o", str(out), "--force")
    assert code == 0 and load_job(out).total_frames == 5


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029"], ids=repr)
def test_text_from_a_shared_settings_file_reaches_the_spec_as_data(tmp_path, capsys, brk):
    """A settings file from a forum cannot write settings into the spec it is imported into: not
    through an unused key or value (in the header's comments), a prompt, or its own file name."""
    hostile = {
        **settings(max_frames=12),
        f"x{brk}output: {{uri: /elsewhere}} #": 1,  # unused: listed in the header
        "noise_schedule": f"x{brk}cluster: {{address: 203.0.113.7:6379}} #",  # ignored: noted with its value
        "prompts": {"0": f"a fox{brk}cluster: {{address: 203.0.113.7:6379}}", "6": "1e3", "8": "\x1b[2J# end"},
    }
    source = tmp_path / f"shared{brk}cluster: {{address: 198.51.100.1:6379}} #.txt"
    source.write_text(json.dumps(hostile))
    out = tmp_path / "job.yaml"
    code, stdout, err = import_here(capsys, str(source), "-o", str(out))
    assert code == 0, err
    intended = import_file(source, random_seed=lambda: 0).job
    text = out.read_text(encoding="utf-8")
    # Read as the renderer reads it, the spec is the importer's tree: nothing more, nothing changed.
    assert parse_yaml(text, "job.yaml") == intended
    assert "cluster" not in intended and "output" not in intended
    spec, default = load_job(out), load_job({"name": "p", "num_frames": 1, "prompts": {0: "."}})
    assert (spec.cluster, spec.output) == (default.cluster, default.output)
    assert spec.clips[0].prompts == intended["prompts"] and spec.clips[0].prompts[6] == "1e3"
    assert spec.clips[0].prompts[0].startswith("a fox") and spec.clips[0].prompts[8] == "\x1b[2J# end"
    # The header is comments only, each line printable; the notes print one line each, unescaped text nowhere.
    header = text[: text.index("\nname: ")].split("\n")
    assert all(line.startswith("#") and line.isprintable() for line in header), header
    assert "203.0.113.7" in text and all(line.isprintable() for line in stdout.splitlines())
    assert "\x1b" not in stdout and len(stdout.splitlines()) == len(import_file(source, random_seed=int).notes) + 1


def settings(**changes) -> dict:
    base = {"W": 512, "H": 512, "seed": 5, "max_frames": 20, "prompts": {"0": "a fox"}, "animation_mode": "2D"}
    return {**base, **changes}


def deforum(**changes):
    return from_deforum(settings(**changes), "t", random_seed=lambda: 1234)


def test_mapping_sizes_seeds_and_prompts():
    imported = deforum(W=513, H=700, seed=-1)
    assert (imported.job["width"], imported.job["height"], imported.job["seed"]) == (512, 704, 1234)
    assert "changed: W 513 → 512 (a multiple of 16)" in imported.notes
    assert "changed: H 700 → 704 (a multiple of 16)" in imported.notes
    prompts = deforum(prompts={"0": "a fox --neg blurry", "max_f/2": "a hill", "max_f-1": "snow"}).job["prompts"]
    assert prompts == {0: "a fox", 9: "a hill", 18: "snow"}  # expression keys over max_f = 19, truncated
    late = deforum(prompts={"5": "a fox", "30": "late"})
    assert late.job["prompts"] == {0: "a fox"}
    assert any(n.startswith("ignored: prompt at frame 30") for n in late.notes)
    assert any("covers the frames before it" in n for n in late.notes)
    assert deforum(positive_prompts="oil painting").job["prompts"] == {0: "a fox oil painting"}


@pytest.mark.parametrize(("behaviour", "mode", "exact"), [
    ("iter", "incremental", True), ("fixed", "fixed", True), ("random", "incremental", False),
    ("ladder", "incremental", False), ("alternate", "incremental", False), ("schedule", "incremental", False)])
def test_seed_behaviour_becomes_the_nearest_noise_mode(behaviour, mode, exact):
    imported = deforum(seed_behavior=behaviour)
    assert imported.job["noise_mode"] == mode
    assert any(n.startswith(f"changed: seed_behavior {behaviour}") for n in imported.notes) is not exact


@pytest.mark.parametrize(("coherence", "mode"), [("None", "none"), ("LAB", "match_first"), ("HSV", "match_first"),
                                                 ("RGB", "match_first"), ("Match Frame 0 LAB", "match_first"),
                                                 ("Video Input", "none"), ("Image", "none")])
def test_colour_coherence_becomes_the_nearest_mode(coherence, mode):
    imported = deforum(color_coherence=coherence)
    assert imported.job["color_coherence"] == mode
    assert any(n.startswith(f"changed: color_coherence {coherence}") for n in imported.notes) is (coherence != "None")


def test_motion_strength_border_and_fps():
    imported = deforum(zoom="0:(1), 10:(1.1)", angle="0:(t/10)", translation_x="0: (3)", border="wrap", fps=24,
                       strength_schedule="0:(0.65), 10:(0.9), 15:(1)", sampling_mode="nearest")
    job = imported.job
    assert job["motion"] == {"zoom": "0:(1), 10:(1.1)", "angle": "0:(t/10)", "translation_x": "0: (3)",
                             "padding": "reflection", "interpolation": "bilinear"}
    assert job["fps"] == 24 and job["strength"] == "0:(0.35), 10:(0.126), 15:(0.126)"  # 0.1 and 0 run no step of 4
    assert any(n.startswith("changed: strength_schedule keeps (nearly) whole frames") for n in imported.notes)
    assert "changed: border wrap → padding reflection (no wrap-around here)" in imported.notes
    assert deforum(strength_schedule="0.7").job["strength"] == "0:(0.3)"  # a bare number is key 0
    assert "strength" not in deforum(strength_schedule="0:(oops)").job  # unreadable: reported, the default kept
    expression = deforum(strength_schedule="0:(0.6+0.1*sin(t))").job["strength"]
    np.testing.assert_allclose(parse_schedule(expression, 20), 1 - (0.6 + 0.1 * np.sin(np.arange(20))))
    assert deforum(animation_mode="None").job["motion"] == {}
    unreadable = deforum(zoom="0:(where(t>5, 1, 2))")
    assert "zoom" not in unreadable.job["motion"]
    assert any(n.startswith('ignored: zoom "0:(where(t>5, 1, 2))" — cannot read it here') for n in unreadable.notes)


def test_deforums_3d_mode_becomes_a_3d_camera():
    imported = deforum(animation_mode="3D", translation_z="0:(0), 10:(2)", rotation_3d_y="0:(0.5)", zoom="0:(1.04)",
                       rotation_3d_z="0:(sin(t/5))", fov_schedule="0: (90)", near_schedule="0: (200)",
                       far_schedule="0: (10000)", depth_algorithm="Depth-Anything-V2-small")
    motion, notes = imported.job["motion"], imported.notes
    assert motion["mode"] == "3d" and motion["rotation_3d_y"] == "0:(0.5)" and "zoom" not in motion
    # fov 90: tan(45°) = 1, Deforum's z moves are a pinhole's: only re-written, not scaled
    assert motion["translation_z"] == "0:(0.0), 10:(2)" and motion["rotation_3d_z"] == "0:(1 * (sin(t/5)))"
    assert 'ignored: zoom "0:(1.04)" — not used in 3D mode, here as in Deforum' in notes
    assert any(n.startswith("changed: depth_algorithm Depth-Anything-V2-small → depth depth-anything-v2-small")
               for n in notes)
    assert motion["depth"] == "depth-anything-v2-small"
    flat = deforum(animation_mode="3D", translation_z="0:(1)", use_depth_warping=False, midas_weight=0.3)
    assert flat.job["motion"]["depth"] == "none" and not any("depth" in n for n in flat.notes)
    blended = deforum(animation_mode="3D", translation_z="0:(1)", depth_algorithm="Midas+AdaBins (old)", midas_weight=0.3)
    assert "ignored: midas_weight 0.3 — Deforum's blend of MiDaS and AdaBins; one depth model here" in blended.notes
    spec = load_job({**imported.job, "output": {"uri": "."}})
    assert spec.clips[0].motion.fov == "0: (90)"
    flat = deforum(animation_mode="2D", translation_z="0:(5)")  # Deforum's 2D mode does not use it: nothing lost
    assert "mode" not in flat.job["motion"] and not any("translation_z" in n for n in flat.notes)


@pytest.mark.parametrize(("value", "cadence", "note"), [
    (3, 3, "changed: diffusion_cadence 3 → cadence 3"),
    ("4", 4, "changed: diffusion_cadence 4 → cadence 4"),  # some versions save it as text
    (1, None, None),  # every frame, as here by default: nothing to say
    ("2.5", None, "ignored: diffusion_cadence \"2.5\" — expected a whole number of frames, at least 1"),
    (0, None, "ignored: diffusion_cadence 0 — expected a whole number of frames, at least 1"),
])
def test_deforums_diffusion_cadence_becomes_cadence(value, cadence, note):
    imported = deforum(diffusion_cadence=value)
    said = [n for n in imported.notes if "cadence" in n]
    assert len(said) == (note is not None) and all(n.startswith(note) for n in said)
    assert load_job(imported.job).clips[0].cadence == (cadence or 1)


# --- Parseq -------------------------------------------------------------------------------------


def parseq_manifest(frames: int = 6) -> dict:
    rows = [{"frame": i, "zoom": 1 + 0.013 * math.sin(i / 1.7) + i / 3e5, "angle": i * 0.7 - 1e-9,
             "translation_x": 2.5 * (i % 3), "strength": 0.55 + 0.02 * i, "seed": 77,
             "deforum_prompt": ("a red fox" if i < 3 else "a snowy hill") + " --neg blurry", "zoom_delta": 0.01}
            for i in range(frames)]
    return {"meta": {"generated_by": "sd_parseq", "version": "0.1.94"}, "options": {"output_fps": 20, "cadence": 1},
            "rendered_frames": rows}


def test_a_parseq_manifest_imports_and_renders_and_its_zoom_reaches_the_loop_exactly(tmp_path, capsys, ray_cluster):
    manifest = parseq_manifest()
    source = tmp_path / "parseq.json"
    source.write_text(json.dumps(manifest))
    spec_path = tmp_path / "jobs" / "parseq.yaml"
    code, stdout, err = import_here(capsys, str(source), "-o", str(spec_path))
    assert code == 0, err
    assert "ignored: negative prompts ('--neg' parts) — FLUX here has no negative prompt" in stdout
    spec = load_job(spec_path, ["width=64", "height=64"])
    clip = spec.clips[0]
    assert clip.prompts == {0: "a red fox", 3: "a snowy hill"} and spec.fps == 20 and clip.seed == 77
    values = ClipFrames.of(clip)  # what the frame loop reads, frame by frame
    rows = manifest["rendered_frames"]
    assert values["motion.zoom"].tolist() == [r["zoom"] for r in rows]  # bit for bit
    assert values["motion.angle"].tolist() == [r["angle"] for r in rows]
    assert values["motion.translation_x"].tolist() == [r["translation_x"] for r in rows]
    np.testing.assert_allclose(values["strength"], [1 - r["strength"] for r in rows], rtol=0, atol=1e-15)
    code, _, err = render_here(capsys, str(spec_path), "width=64", "height=64", f"output.uri={tmp_path / 'out'}")
    assert code == 0, err
    assert len(list((tmp_path / "out").glob("*/segments/*/*/frames/*.png"))) == 6


def test_the_parseq_manifest_in_deforums_tests_imports(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    code, stdout, err = import_here(capsys, str(DATA / "deforum-parseq.json"), "-o", str(out))
    assert code == 0, err
    rows = json.loads((DATA / "deforum-parseq.json").read_text())["rendered_frames"]
    clip = load_job(out).clips[0]
    assert clip.num_frames == len(rows)
    assert ClipFrames.of(clip)["motion.angle"].tolist() == [float(r["angle"]) for r in rows]


# --- bad files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    ('{"W": 512,\n "H": 512,\n}', "not JSON (Expecting property name enclosed in double quotes at line 3 column 1)"),
    ("[1, 2, 3]", "a JSON list, not a Deforum settings file or Parseq manifest"),
    ('{"title": "my notes"}', "JSON, but neither a Deforum settings file (no max_frames and prompts) nor a Parseq"),
    ('{"meta": {"generated_by": "sd_parseq", "version": "2.0.1"}, "rendered_frames": [{"frame": 0}]}',
     "Parseq manifest version 2.0.1: unknown (this importer reads 0.x)"),
    ('{"meta": {"generated_by": "sd_parseq", "version": "0.1.94"}, "keyframes": []}',
     "a Parseq document without rendered_frames"),
    ('{"max_frames": "many", "prompts": {"0": "x"}}', "max_frames: expected a whole number >= 1, got \"many\""),
    ('{"max_frames": 10, "prompts": {"zero": "x"}}', "prompts: key 'zero' is neither a frame number nor an expression"),
    ("\x00\xff", "not a text file"),
    ('{"max_frames": 2000000, "prompts": {"0": "x"}}', "max_frames: 2000000, more than a clip may have"),
    ('{"max_frames": 5, "W": 10000, "prompts": {"0": "x"}}', "W: 10000 pixels, more than 8192"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_a_bad_file_gets_one_line_and_exit_2(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content.encode("latin-1") if content.startswith("\x00") else content.encode())
    code, stdout, err = import_here(capsys, str(bad), "-o", str(tmp_path / "out.yaml"))
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"deforum-ray import: {bad}: ") and message in err, err
    assert not (tmp_path / "out.yaml").exists()


def test_a_parseq_manifest_too_long_for_one_schedule_gets_one_line(tmp_path, capsys):
    manifest = parseq_manifest(4000)
    source = tmp_path / "long.json"
    source.write_text(json.dumps(manifest))
    code, _, err = import_here(capsys, str(source), "-o", str(tmp_path / "long.yaml"))
    assert code == 2 and len(err.splitlines()) == 1
    assert "rendered_frames: zoom changes on 4000 frames" in err and "import the manifest in parts" in err


def test_import_file_bounds_its_input(tmp_path):
    huge = tmp_path / "huge.json"
    huge.write_text('{"max_frames": 1, "prompts": {"0": "' + "x" * (5 << 20) + '"}}')
    with pytest.raises(ImportProblem, match="more than a settings file may hold"):
        import_file(huge, random_seed=lambda: 0)
    with pytest.raises(ImportProblem, match="every row needs a whole frame number"):
        from_parseq({"rendered_frames": [{"frame": "0"}]}, "x")


def test_parseqs_cadence_option_becomes_cadence():
    manifest = parseq_manifest()
    manifest["options"]["cadence"] = 3
    imported = from_parseq(manifest, "p")
    assert imported.job["cadence"] == 3 and load_job(imported.job).clips[0].cadence == 3
    assert any(n.startswith("changed: options.cadence 3 → cadence 3") for n in imported.notes)
    assert "cadence" not in from_parseq(parseq_manifest(), "p").job  # 1: every frame, the default


def test_a_parseq_manifest_that_moves_a_3d_camera_imports_in_3d():
    manifest = parseq_manifest()
    for i, row in enumerate(manifest["rendered_frames"]):
        row.update(translation_z=0.5 * i, rotation_3d_y=0.25, fov=60.0, near=200.0, far=10000.0)
    imported = from_parseq(manifest, "p")
    motion = imported.job["motion"]
    assert motion["mode"] == "3d" and "zoom" not in motion and "angle" not in motion
    clip = load_job({**imported.job, "output": {"uri": "."}}).clips[0]
    values = ClipFrames.of(clip)
    np.testing.assert_allclose(values["motion.translation_z"], [0.5 * i / math.tan(math.radians(30)) for i in range(6)],
                               rtol=1e-12)
    assert (values["motion.rotation_3d_y"] == 0.25).all() and (values["motion.fov"] == 60).all()
    assert any(n.startswith("ignored: zoom — not used in 3D mode") for n in imported.notes)
    assert "mode" not in from_parseq(parseq_manifest(), "p").job["motion"]  # no camera move: 2D as before
