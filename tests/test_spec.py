"""Job specs: merging, the one-clip shorthand, per-clip overrides, and every validation rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, snapshot
from deforum_ray import cli
from deforum_ray.job.spec import JobSpec, SpecError, load_job, spec_to_yaml

DEMO = REPO / "jobs" / "demo.yaml"
CAT = REPO / "jobs" / "cat_sushi.yaml"


def two_clip_job(**top) -> dict:
    job = {
        "name": "t",
        "model": "tiny",
        "clips": [
            {"name": "a", "num_frames": 12, "prompts": {0: "a red fox", 6: "a blue fox"}},
            {"name": "b", "num_frames": 8, "seed": 7, "prompts": {0: "a hill"}, "motion": {"zoom": "0:(1.02)"}},
        ],
    }
    job.update(top)
    return job


# --- merging ----------------------------------------------------------------------------------------


def test_demo_and_cat_sushi_are_valid(tmp_path):
    demo = load_job(DEMO, [f"output.uri={tmp_path}"])
    assert isinstance(demo, JobSpec)
    assert [c.name for c in demo.clips] == ["lighthouse", "harbour"]
    assert demo.model.name == "tiny" and demo.width == demo.height == 128
    cat = load_job(CAT, [f"output.uri={tmp_path}"])
    assert cat.model.source == "black-forest-labs/FLUX.1-schnell"
    assert (cat.width, cat.height, cat.total_frames, cat.clips[0].seed) == (512, 512, 60, 42)
    assert cat.clips[0].motion.zoom == "0:(1.0), 60:(1.1)"
    assert cat.clips[0].strength == "0.5" and cat.clips[0].noise_scale == "1.0"


def test_merge_precedence_defaults_preset_job_override(write_job, tmp_path):
    out = f"output.uri={tmp_path}"
    base = two_clip_job()
    assert load_job(write_job(base), [out]).steps == 4  # tiny preset (defaults say 4 too)
    dev = load_job(write_job({**base, "model": "flux1-dev"}), [out])
    assert (dev.steps, dev.guidance, dev.model.max_text_length) == (28, 3.5, 512)  # preset over defaults
    assert dev.width == 512  # from defaults: the dev preset does not set it
    job_wins = load_job(write_job({**base, "model": "flux1-dev", "steps": 10}), [out])
    assert job_wins.steps == 10 and job_wins.guidance == 3.5  # job over preset
    cli_wins = load_job(write_job({**base, "model": "flux1-dev", "steps": 10}), [out, "steps=12", "guidance=2"])
    assert (cli_wins.steps, cli_wins.guidance) == (12, 2.0)  # override over job
    assert all(c.steps == 12 for c in cli_wins.clips)


def test_model_override_picks_the_preset(write_job, tmp_path):
    spec = load_job(write_job(two_clip_job()), [f"output.uri={tmp_path}", "model=flux1-schnell"])
    assert spec.model.name == "flux1-schnell" and spec.model.max_text_length == 256
    spec = load_job(write_job(two_clip_job()), [f"output.uri={tmp_path}", "model.max_text_length=16"])
    assert spec.model.name == "tiny" and spec.model.max_text_length == 16


def test_model_mapping_with_preset_and_single_file(write_job, tmp_path):
    weights = tmp_path / "finetune.safetensors"
    weights.write_bytes(b"\0" * 16)
    job = two_clip_job(model={"preset": "flux1-dev", "transformer": str(weights)})
    spec = load_job(write_job(job), [f"output.uri={tmp_path}"])
    assert spec.model.transformer == str(weights)
    assert spec.model.source == "black-forest-labs/FLUX.1-dev" and spec.steps == 28


def test_random_full_size_preset_needs_no_folder(write_job, tmp_path):
    spec = load_job(write_job(two_clip_job()), [f"output.uri={tmp_path}", "model=flux1-schnell-random",
                                                "cluster.compile=true", "cluster.compile_cache=/tmp/cache"])
    assert spec.model.source == "random:flux1-schnell" and spec.steps == 4 and spec.model.max_text_length == 256
    assert spec.cluster.compile and spec.cluster.compile_cache == "/tmp/cache" and spec.cluster.write_queue == 8


def test_custom_model_folder(write_job, tmp_path):
    folder = tmp_path / "my-flux"
    folder.mkdir()
    spec = load_job(write_job(two_clip_job(model={"source": str(folder)})), [f"output.uri={tmp_path}"])
    assert spec.model.source == str(folder) and spec.model.name == "my-flux"
    assert spec.model.shift_timesteps is None  # read from the model's scheduler config at load time


def test_one_clip_shorthand(write_job, tmp_path):
    job = {"name": "solo", "num_frames": 10, "prompts": {0: "a boat"}, "seed": 3}
    spec = load_job(write_job(job), [f"output.uri={tmp_path}"])
    assert len(spec.clips) == 1
    clip = spec.clips[0]
    assert (clip.name, clip.num_frames, clip.prompts, clip.seed) == ("solo", 10, {0: "a boat"}, 3)
    # clips.0.x addresses the one clip of a shorthand job
    spec = load_job(write_job(job), [f"output.uri={tmp_path}", "clips.0.num_frames=20", "clips[0].segment_length=5"])
    assert spec.clips[0].num_frames == 20 and spec.clips[0].segment_length == 5


def test_segment_settings_default_per_job_and_blend_fills_the_segment(write_job, tmp_path):
    job = two_clip_job(segment_length=8)
    job["clips"][1].update(segment_length=6, blend=2, anchor_strength=0.8)
    a, b = load_job(write_job(job), [f"output.uri={tmp_path}"]).clips
    assert (a.segment_length, a.blend, a.anchor_strength) == (8, 7, 0.6)  # blend null: all but the anchor
    assert (b.segment_length, b.blend, b.anchor_strength) == (6, 2, 0.8)
    plain = load_job(write_job(two_clip_job()), [f"output.uri={tmp_path}"]).clips[0]
    assert (plain.segment_length, plain.blend) == (0, 0)


def test_per_clip_overrides_merge_over_job_level(write_job, tmp_path):
    job = two_clip_job(motion={"angle": "0:(1)", "zoom": "0:(1.01)"}, strength="0:(0.6)")
    spec = load_job(write_job(job), [f"output.uri={tmp_path}", "seed=5"])
    a, b = spec.clips
    assert (a.seed, b.seed) == (5, 7)  # b keeps its own seed; a inherits the overridden job seed
    assert a.motion.zoom == "0:(1.01)" and b.motion.zoom == "0:(1.02)"
    assert a.motion.angle == b.motion.angle == "0:(1)"  # motion merges key by key
    assert a.strength == b.strength == "0:(0.6)"
    spec = load_job(write_job(job), [f"output.uri={tmp_path}", "clips.1.motion.angle=0:(-2)", "clips[0].steps=6"])
    assert spec.clips[1].motion.angle == "0:(-2)" and spec.clips[1].motion.zoom == "0:(1.02)"
    assert (spec.clips[0].steps, spec.clips[1].steps) == (6, 4)


def test_numbers_become_schedule_strings_and_prompt_keys_become_ints(write_job, tmp_path):
    job = two_clip_job(strength=0.7, noise_scale=1)
    job["clips"][0]["prompts"] = {"0": "x", "5": "y"}
    spec = load_job(write_job(job), [f"output.uri={tmp_path}"])
    assert spec.clips[0].strength == "0.7" and spec.clips[0].noise_scale == "1.0"
    assert spec.clips[0].prompts == {0: "x", 5: "y"}


def test_resolved_yaml_loads_back_to_the_same_spec(write_job, tmp_path):
    spec = load_job(DEMO, [f"output.uri={tmp_path}"])
    path = tmp_path / "resolved.yaml"
    path.write_text(spec_to_yaml(spec))
    assert load_job(path) == spec


def test_job_as_a_mapping(tmp_path):
    spec = load_job(two_clip_job(output={"uri": str(tmp_path)}))
    assert spec.total_frames == 20


# --- every validation rule: the field named, exit 2, existing output untouched ---------------------------


def _image(tmp_path: Path) -> str:
    path = tmp_path / "init.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    return str(path)


BAD_OVERRIDES = [
    # unknown keys, with a suggestion
    (["widht=128"], "widht: unknown key (did you mean 'width'?)"),
    (["motion.zoon=1"], "motion.zoon: unknown key (did you mean 'zoom'?)"),
    (["clips.0.nmae=x"], "clips[0].nmae: unknown key (did you mean 'name'?)"),
    (["output.codc=libx264"], "output.codc: unknown key (did you mean 'codec'?)"),
    (["cluster.workers=2"], "cluster.workers: unknown key"),
    (["clips.0.width=64"], "clips[0].width: is set for the whole job only"),
    # types
    (["seed=abc"], "seed: expected a whole number, got string 'abc'"),
    (["steps=2.5"], "steps: expected a whole number"),
    (["guidance=high"], "guidance: expected a number"),
    (["post.loop=maybe"], "post.loop: expected true or false"),
    (["name=[1, 2]"], "name: expected a string, got a list"),
    (["strength=[1]"], "strength: expected a number or a schedule string"),
    (["motion=3"], "motion: expected a mapping"),
    (["clips=5"], "clips: expected a list of clips"),
    (["clips.0.prompts=a fox"], "clips[0].prompts: expected a mapping of frame: prompt"),
    (["output.uri=null"], "output.uri: missing value"),
    # ranges and choices
    (["seed=-1"], "seed: must be [0, 4294967295], got -1"),
    (["steps=0"], "steps: must be [1, 1000], got 0"),
    (["guidance=-1"], "guidance: must be >= 0, got -1.0"),
    (["width=100"], "width: must be a multiple of 16"),
    (["height=0"], "height: must be [16, 8192], got 0"),
    (["fps=0"], "fps: must be [1, 240], got 0.0"),
    (["noise_mode=slurp"], "noise_mode: 'slurp' is not one of fixed, incremental, subseed, slerp (did you mean 'slerp'?)"),
    (["noise_delta=1.5"], "noise_delta: must be [0, 1], got 1.5"),
    (["subseed=-2"], "subseed: must be [0, 4294967295]"),
    (["color_coherence=match"], "color_coherence: 'match' is not one of none, match_first, match_frame"),
    (["motion.interpolation=nearest"], "motion.interpolation: 'nearest' is not one of bilinear, bicubic"),
    (["motion.padding=wrap"], "motion.padding: 'wrap' is not one of reflection, border, zeros"),
    (["post.interpolation=3"], "post.interpolation: 3 is not one of 1, 2, 4, 8"),
    (["output.codec=h264"], "output.codec: 'h264' is not one of"),
    (["output.crf=99"], "output.crf: must be [0, 51], got 99"),
    (["cluster.chains_per_worker=0"], "cluster.chains_per_worker: must be [1, 64], got 0"),
    (["cluster.checkpoint_every=0"], "cluster.checkpoint_every: must be >= 1, got 0"),
    (["cluster.num_workers=0"], "cluster.num_workers: must be [1, 4096], got 0"),
    (["post.loop=1"], "post.loop: expected true or false"),
    (["model.max_text_length=1024"], "model.max_text_length: must be [1, 512], got 1024"),
    # schedules: parsed, then checked on every frame of every clip
    (["motion.zoom=0:(1.0), 60:(1.1"], 'motion.zoom: cannot parse "0:(1.0), 60:(1.1" at position 16'),
    (["clips.0.motion.zoom=0:(1.0), 60:(1.1"], 'clips[0].motion.zoom: cannot parse "0:(1.0), 60:(1.1" at position 16'),
    (["motion.angle=0:(t.real)"], "motion.angle: cannot parse"),
    (["motion.translation_x=0:(nope)"], "motion.translation_x: cannot parse"),
    (["motion.translation_y=0:(1/0)"], "motion.translation_y: cannot parse"),
    (["motion.zoom=0:(1), 10:(0)"], "motion.zoom: must be > 0, but is 0 at frame 10 of clip 'a'"),
    (["strength=0:(0.5), 4:(1.5)"], "strength: must be (0, 1], but is 1.25 at frame 3 of clip 'a'"),
    (["clips.1.strength=0"], "clips[1].strength: must be (0, 1], but is 0 at frame 0 of clip 'b'"),
    (["strength=0.1"], "strength: 0.1 at frame 1 of clip 'a' runs 0 of 4 steps; use a strength above 0.125"),
    (["noise_scale=0:(1), 5:(-1)"], "noise_scale: must be >= 0, but is -0.2 at frame 3 of clip 'a'"),
    (["subseed_strength=2"], "subseed_strength: must be [0, 1], but is 2"),
    # prompts, clip names, frame counts
    (["clips.0.prompts.40=late"], "clips[0].prompts.40: prompt key 40 is past the clip's last frame 11"),
    (["clips.0.prompts.3=null"], "clips[0].prompts.3: expected a non-empty prompt string"),
    (["clips.1.name=a"], "clips[1].name: clip name 'a' is already used by clips[0].name"),
    (["clips.1.name=a/b"], "clips[1].name: 'a/b' must be letters, digits"),
    (["name=my job"], "name: 'my job' must be letters, digits"),
    (["clips.0.num_frames=0"], "clips[0].num_frames: must be [1, 1000000], got 0"),
    (["clips.0.segment_length=-1"], "clips[0].segment_length: must be >= 0, got -1"),
    (["segment_length=4", "blend=4"], "blend: must be < segment_length (4) so that a segment starts on its own anchor, got 4 for clip 'a'"),
    (["clips.1.segment_length=4", "clips.1.blend=9"], "clips[1].blend: must be < segment_length (4)"),
    (["segment_length=4", "anchor_strength=0.1"], "anchor_strength: 0.1 runs 0 of 4 steps for clip 'a'; use an anchor_strength above 0.125"),
    (["anchor_strength=0"], "anchor_strength: must be (0, 1], got 0"),
    (["clips.1.cadence=0"], "clips[1].cadence: must be [1, 1000000], got 0"),
    (["cadence=2.5"], "cadence: expected a whole number, got float 2.5"),
    (["clips=[]"], "clips: no clips"),
    (["num_frames=10"], "num_frames: give either clips or top-level prompts + num_frames, not both"),
    # paths: init image readable, output writable, model weights present
    (["clips.0.init_image=/nonexistent/x.png"], "clips[0].init_image: no such file '/nonexistent/x.png'"),
    (["model=flux-dev"], "model: unknown model preset 'flux-dev' (did you mean 'flux1-dev'?)"),
    (["model.source=./no/such/folder"], "model.source: no model folder at './no/such/folder'"),
    (["model.source=random:flux9"], "model.source: unknown random model 'random:flux9'; one of random:flux1-schnell"),
    (["cluster.compile=sometimes"], "cluster.compile: expected true or false"),
    (["cluster.compile_mode=fast"], "cluster.compile_mode: 'fast' is not one of default, max-autotune-no-cudagraphs"),
    (["cluster.write_queue=-1"], "cluster.write_queue: must be [0, 256], got -1"),
    (["model.transformer=weights.bin"], "model.transformer: expected a .safetensors file"),
    (["model.transformer=/nonexistent/t.safetensors"], "model.transformer: no such file"),
]


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES, ids=[o[0] for o, _ in BAD_OVERRIDES])
@pytest.mark.parametrize("command", ["validate", "render"])
def test_every_bad_field_is_named_exit_2_and_output_untouched(
    command, overrides, message, write_job, output_dir, capsys
):
    before = snapshot(output_dir)
    job = write_job(two_clip_job(output={"uri": str(output_dir / "new")}))
    code, out, err = _run_cli(capsys, command, str(job), *overrides)
    assert code == 2, err
    assert message in err, err
    lines = err.strip().splitlines()
    assert lines[-1].endswith("nothing was rendered")
    assert all(line.strip() for line in lines) and "Traceback" not in err
    assert snapshot(output_dir) == before
    assert not (output_dir / "new").exists()


def test_every_error_is_reported_together(write_job, output_dir, capsys):
    job = write_job(two_clip_job(output={"uri": str(output_dir)}))
    code, _, err = _run_cli(capsys, "validate", str(job), "seed=-1", "widht=5", "clips.1.noise_mode=x",
                            "motion.zoom=0:(1", "clips.0.prompts.99=late")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 6, err  # five problems, then the summary
    assert "5 errors" in lines[-1]
    for field in ("seed:", "widht:", "clips[1].noise_mode:", "motion.zoom:", "clips[0].prompts.99:"):
        assert any(line.startswith(field) for line in lines), field


def test_inherited_value_is_blamed_on_the_job_level_key(write_job, tmp_path):
    with pytest.raises(SpecError) as info:
        load_job(write_job(two_clip_job(noise_mode="slurp")), [f"output.uri={tmp_path}"])
    assert info.value.errors == ["noise_mode: 'slurp' is not one of fixed, incremental, subseed, slerp (did you mean 'slerp'?)"]


def test_init_image_that_is_not_an_image(write_job, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    job = write_job(two_clip_job(output={"uri": str(tmp_path / "out")}))
    code, _, err = _run_cli(capsys, "validate", str(job), f"clips.0.init_image={text}")
    assert code == 2 and "clips[0].init_image:" in err and "is not a readable image" in err


def test_init_image_that_is_readable(write_job, tmp_path):
    spec = load_job(write_job(two_clip_job()), [f"output.uri={tmp_path}", f"clips.0.init_image={_image(tmp_path)}"])
    assert spec.clips[0].init_image.endswith("init.png")


def test_a_job_files_relative_inputs_are_found_next_to_it_and_overrides_from_the_working_folder(
        tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "pictures").mkdir(parents=True)
    elsewhere.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(project / "pictures" / "init.png")
    job = two_clip_job(output={"uri": str(tmp_path / "out"), "audio": "sound.wav"})
    job["clips"][1]["init_image"] = "pictures/init.png"
    (project / "job.yaml").write_text(yaml.safe_dump(job))
    monkeypatch.chdir(elsewhere)  # as ray job submit's working folder or cron's home would be
    with pytest.raises(SpecError) as info:
        load_job(project / "job.yaml")
    assert info.value.errors == [f"output.audio: no such file '{project / 'sound.wav'}'"]  # looked for beside the job
    spec = load_job(project / "job.yaml", ["output.audio=null"])
    assert spec.clips[1].init_image == str(project / "pictures" / "init.png") and spec.clips[0].init_image is None
    code, _, err = _run_cli(capsys, "validate", str(project / "job.yaml"), "output.audio=null",
                            "clips.0.init_image=pictures/init.png")
    assert code == 2 and err.startswith("clips[0].init_image: no such file 'pictures/init.png'")  # from here
    (elsewhere / "pictures").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(elsewhere / "pictures" / "init.png")
    assert load_job(project / "job.yaml", ["output.audio=null", "clips.0.init_image=pictures/init.png"]).clips[0].init_image \
        == "pictures/init.png"
    job = {"name": "one", "model": "tiny", "num_frames": 2, "prompts": {0: "a fox"}, "init_image": "pictures/init.png",
           "output": {"uri": str(tmp_path / "out")}}
    (project / "one.yaml").write_text(yaml.safe_dump(job))  # a one-clip job names it at the top
    assert load_job(project / "one.yaml").clips[0].init_image == str(project / "pictures" / "init.png")


def test_output_uri_that_is_a_file(write_job, output_dir, capsys):
    existing = output_dir / "earlier-000000000000" / "earlier.mp4"
    before = snapshot(output_dir)
    job = write_job(two_clip_job())
    code, _, err = _run_cli(capsys, "render", str(job), f"output.uri={existing}/sub")
    assert code == 2 and "output.uri:" in err and "is a file, not a folder" in err
    assert snapshot(output_dir) == before


def test_output_uri_unknown_protocol(write_job, capsys):
    code, _, err = _run_cli(capsys, "validate", str(write_job(two_clip_job())), "output.uri=nosuch://bucket/x")
    assert code == 2 and "output.uri: unknown storage protocol 'nosuch'" in err


def test_output_uri_file_scheme_is_accepted_and_memory_refused(write_job, tmp_path):
    assert load_job(write_job(two_clip_job()), [f"output.uri=file://{tmp_path}/r"]).clips
    with pytest.raises(SpecError, match="output.uri: 'memory://renders' lives in one process's memory"):
        load_job(write_job(two_clip_job()), ["output.uri=memory://renders"])


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nclips:\n  - name: a\n    prompts: {0: \"x\"\n    num_frames: 3\n")
    code, _, err = _run_cli(capsys, "validate", str(path))
    assert code == 2
    first = err.strip().splitlines()[0]
    assert first.startswith(f"{path}:") and "YAML syntax error" in first
    line = int(first.split(":")[1])
    assert 4 <= line <= 5


def test_strict_fallback_loader_refuses_duplicates_and_reads_floats():
    import yaml

    from deforum_ray.job.spec import StrictLoader

    with pytest.raises(yaml.YAMLError, match="duplicate key seed"):
        yaml.load("seed: 1\nseed: 2\n", Loader=StrictLoader)
    assert yaml.load("a: {b: 1}\n", Loader=StrictLoader) == {"a": {"b": 1}}


def test_yaml_floats_in_exponent_form(write_job, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: e\nnum_frames: 3\nprompts: {{0: x}}\nguidance: 1e-3\noutput: {{uri: {tmp_path}}}\n")
    assert load_job(path).guidance == 0.001


def test_duplicate_yaml_key_names_the_line(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nseed: 1\nseed: 2\n")
    code, _, err = _run_cli(capsys, "validate", str(path))
    assert code == 2 and f"{path}:3:" in err and "duplicate key" in err


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n"])
def test_spec_that_is_not_a_mapping(tmp_path, capsys, content):
    path = tmp_path / "list.yaml"
    path.write_text(content)
    code, _, err = _run_cli(capsys, "validate", str(path))
    assert code == 2 and "a job spec is a YAML mapping" in err


def test_missing_spec_file(tmp_path, capsys):
    code, _, err = _run_cli(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: no such file" in err


def test_malformed_override(write_job, capsys):
    code, _, err = _run_cli(capsys, "validate", str(write_job(two_clip_job())), "seed")
    assert code == 2 and "override 'seed': expected key=value" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["validate", str(write_job(two_clip_job())), "--bogus"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SpecError, match="override 'seed': expected key=value"):
        load_job(two_clip_job(), ["seed"])


def test_missing_required_clip_keys(write_job, tmp_path):
    job = two_clip_job(output={"uri": str(tmp_path)})
    del job["clips"][0]["num_frames"]
    del job["clips"][1]["prompts"]
    with pytest.raises(SpecError) as info:
        load_job(write_job(job))
    assert "clips[0].num_frames: missing value" in info.value.errors
    assert "clips[1].prompts: missing value" in info.value.errors


def test_omegaconf_interpolations_are_refused_in_files_and_overrides(write_job, tmp_path):
    """A spec is data: ``${...}`` (a reference, or a resolver such as oc.env that reads the
    machine's environment) is refused, naming the field, in the file and in an override."""
    with pytest.raises(SpecError, match=r"subseed: '\$\{\.\.\.\}' is not allowed"):
        load_job(write_job(two_clip_job(subseed="${seed}")), [f"output.uri={tmp_path}", "seed=9"])
    with pytest.raises(SpecError, match=r"^clips\.0\.prompts\.0: '\$\{\.\.\.\}' is not allowed"):
        load_job(write_job(two_clip_job()), [f"output.uri={tmp_path}", "clips.0.prompts.0=${oc.env:PATH}"])
