"""A job spec is data from a stranger: what a hostile or careless user types gets one line naming
the field and exit 2, quickly and in bounded memory, never a traceback or a hang, and nothing
under the output is written (Step 11)."""

from __future__ import annotations

import time

import pytest

from deforum_ray import cli
from deforum_ray.job.limits import (MAX_CLIP_FRAMES, MAX_EXPRESSION_TERMS, MAX_SPEC_BYTES, MAX_SPEC_DEPTH,
                                    MAX_SPEC_NODES)

ALIAS_BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]"""


def job_text(output, extra: str = "", clip: str = "", name: str = "h") -> str:
    prompts = "" if "prompts:" in clip else ", prompts: {0: 'a fox'}"
    return (f"name: {name}\nmodel: tiny\noutput: {{uri: '{output}'}}\n{extra}\n"
            f"clips:\n  - {{name: a, num_frames: 4{prompts}{clip}}}\n")


def refused(capsys, *argv: str, within: float = 20.0) -> str:
    """Run the CLI; it must exit 2 within ``within`` seconds with one-line errors and no traceback."""
    started = time.perf_counter()
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and seconds < within, (seconds, err)
    return err


@pytest.mark.parametrize("extra, clip, expected", [
    ("motion: [1, 2]", "", "motion: expected a mapping of settings, got a list"),
    ("post: [1]", "", "post: expected a mapping of settings, got a list"),
    ("cluster: 3", "", "cluster: expected a mapping of settings, got int 3"),
    ("", ", motion: [1]", "clips[0].motion: expected a mapping"),
    ("subseed: '${seed}'", "", "subseed: '${...}' is not allowed: a job spec is data"),
    ("", ", prompts: {0: '${oc.env:PATH}'}", "clips[0].prompts.0: '${...}' is not allowed"),
    ("", ", prompts: {}", "clips[0].prompts: no prompts; give at least one frame: prompt"),
    ("fps: 1.0e-9", "", "fps: must be [1, 240], got 1e-09"),
    ("", ", motion: {zoom: '0:(²)'}", "expected a value, found '²'"),
    ("", ", motion: {zoom: '²:(1)'}", "expected a keyframe number or a quoted expression, found '²'"),
    ("", ", prompts: {²: 'a fox'}", "prompt keys are frame numbers >= 0"),
    ("", ", motion: {zoom: '0:(" + "+".join(["t"] * 1000) + ")'}",
     f"expression of more than {MAX_EXPRESSION_TERMS} terms"),
])
def test_bad_sections_interpolations_and_schedules_are_one_line(tmp_path, capsys, extra, clip, expected):
    path = tmp_path / "job.yaml"
    out = tmp_path / "renders"
    path.write_text(job_text(out, extra, clip))
    for command in ("validate", "render"):
        err = refused(capsys, command, str(path))
        assert expected in err
    assert not out.exists()  # nothing was written


def test_the_storage_options_section_must_be_a_mapping(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r").replace("output: {uri:", "output: {storage_options: [1], uri:"))
    assert "output.storage_options: expected a mapping of settings, got a list" in refused(capsys, "validate", str(path))


@pytest.mark.parametrize("override", ["motion=[1, 2]", "output=[1]", "post=3", "output.storage_options=[1]"])
def test_a_section_overridden_by_a_non_mapping_is_named_as_in_a_file(tmp_path, capsys, override):
    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r"))
    key = override.split("=")[0]
    assert f"{key}: expected a mapping of settings, got " in refused(capsys, "validate", str(path), override)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels: a decompression bomb's front."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(9000, 9000), (100_000, 100_000)])
def test_an_init_image_with_too_many_pixels_is_refused_from_its_header(tmp_path, capsys, width, height):
    """Above our limit but under Pillow's (9000²), and far above Pillow's own bomb error (100000²)."""
    from deforum_ray.job.limits import MAX_IMAGE_PIXELS

    image = tmp_path / "bomb.png"
    image.write_bytes(png_header(width, height))
    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r", clip=f", init_image: '{image}'"))
    err = refused(capsys, "render", str(path))
    assert f"clips[0].init_image: '{image}': " in err and f"more than the {MAX_IMAGE_PIXELS:,} pixels" in err
    assert not (tmp_path / "r").exists()


def test_an_input_that_does_not_answer_fails_within_the_timeout(tmp_path, capsys, monkeypatch):
    """An S3 endpoint that accepts connections and never answers, and a named pipe nobody writes:
    validation gives up after INPUT_TIMEOUT_S, naming the field."""
    import os
    import socket

    from deforum_ray.job import limits

    monkeypatch.setattr(limits, "INPUT_TIMEOUT_S", 1.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody reads or replies
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    path = tmp_path / "job.yaml"
    try:
        for uri in ("s3://frames/init.png", str(pipe)):
            path.write_text(job_text(tmp_path / "r", clip=f", init_image: '{uri}'"))
            err = refused(capsys, "render", str(path), within=10)
            assert f"clips[0].init_image: could not read '{uri}' within 1.5 s" in err
    finally:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems by their options, not the env
        silent.close()
        try:  # let the reader stuck on the pipe go: it reads an empty file and its thread ends
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert not (tmp_path / "r").exists()


def test_an_audio_track_that_is_not_audio_is_refused_before_rendering(tmp_path, capsys):
    import subprocess

    from deforum_ray.job.inputs import ffmpeg_exe

    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r"))
    text = tmp_path / "song.mp3"
    text.write_text("not audio at all\n")
    err = refused(capsys, "render", str(path), f"output.audio={text}")
    assert f"output.audio: '{text}' has no audio ffmpeg can read (" in err
    silent_video = tmp_path / "picture.mp4"  # a real media file with no audio stream
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "color=black:size=32x32:duration=0.2",
                    str(silent_video)], check=True)
    assert "has no audio ffmpeg can read" in refused(capsys, "validate", str(path), f"output.audio={silent_video}")
    assert "output.audio: no such file" in refused(capsys, "validate", str(path), f"output.audio={tmp_path / 'nope.wav'}")
    assert not (tmp_path / "r").exists()


def test_the_environment_never_reaches_a_stored_spec(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-copy-me")
    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r", name="'${oc.env:AWS_SECRET_ACCESS_KEY}'"))
    err = refused(capsys, "render", str(path))
    assert "do-not-copy-me" not in err and "name: '${...}' is not allowed" in err
    err = refused(capsys, "render", str(tmp_path / "job.yaml"), "name=${oc.env:AWS_SECRET_ACCESS_KEY}")
    assert "do-not-copy-me" not in err


def test_an_alias_bomb_is_refused_in_a_file_and_in_an_override(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r", "post:\n  " + ALIAS_BOMB.replace("\n", "\n  ")))
    assert f"more than {MAX_SPEC_NODES} values once YAML aliases are expanded" in refused(capsys, "validate", str(path))
    path.write_text(job_text(tmp_path / "r"))
    err = refused(capsys, "validate", str(path), f"post={ALIAS_BOMB}")
    assert f"post: more than {MAX_SPEC_NODES} values" in err


def test_nesting_and_size_are_bounded(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(job_text(tmp_path / "r", "x: " + "[" * 100 + "]" * 100))
    assert f"nested more than {MAX_SPEC_DEPTH} levels deep" in refused(capsys, "validate", str(path))
    path.write_text(job_text(tmp_path / "r", "x: " + "[" * 5000 + "]" * 5000))  # deeper than Python's recursion
    assert "nest" in refused(capsys, "validate", str(path))  # PyYAML's own depth limit, or ours
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(50 * 2**20)  # 50 MB, refused by its size before it is read
    assert f"more than a job spec may hold ({MAX_SPEC_BYTES})" in refused(capsys, "validate", str(big), within=2)


def test_the_worst_specs_are_refused_in_bounded_memory(tmp_path):
    """The hostile specs of this file, one after another in one process of their own: each is
    refused (exit 2) and the process's peak memory stays under 1 GB."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    bombs = {"aliases.yaml": job_text(tmp_path / "r", "post:\n  " + ALIAS_BOMB.replace("\n", "\n  ")),
             "nesting.yaml": job_text(tmp_path / "r", "x: " + "[" * 5000 + "]" * 5000),
             "interpolations.yaml": job_text(tmp_path / "r", "subseed: '" + "${a}" * 200 + "'"),
             "terms.yaml": job_text(tmp_path / "r", clip=", motion: {zoom: '0:(" + "+".join(["t"] * 5000) + ")'}"),
             "frames.yaml": job_text(tmp_path / "r").replace("num_frames: 4", "num_frames: 1000000") + "".join(
                 f"  - {{name: c{i}, num_frames: 1000000, prompts: {{0: 'a fox'}}}}\n" for i in range(10))}
    for name, text in bombs.items():
        (tmp_path / name).write_text(text)
    with (tmp_path / "big.yaml").open("wb") as handle:
        handle.truncate(50 * 2**20)
    runs = [["validate", str(tmp_path / name)] for name in [*bombs, "big.yaml"]]
    runs += [["validate", str(tmp_path / "frames.yaml"), f"post={ALIAS_BOMB}"], ["schedule", "0:(1)", "--frames", "1000000000"]]
    script = ("import json, resource, sys\nfrom deforum_ray import cli\ncodes = []\n"
              f"for argv in {runs!r}:\n"
              "    try:\n        codes.append(cli.main(argv))\n    except SystemExit as exc:\n        codes.append(exc.code)\n"
              "print(json.dumps({'codes': codes, 'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [2] * len(runs), done.stderr[-3000:]
    assert result["peak_kib"] < 2**20, result  # KiB: under 1 GiB
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()


def test_schedule_preview_frames_are_bounded(capsys):
    err = refused(capsys, "schedule", "0:(1)", "--frames", "1000000000", within=5)
    assert f"at most {MAX_CLIP_FRAMES} frames" in err


def test_thousands_of_prompt_keys_are_real_work_not_an_error(tmp_path, capsys):
    """A Parseq-style job has a prompt per frame."""
    prompts = "\n".join(f"      {i}: 'a lighthouse, take {i}'" for i in range(5000))
    path = tmp_path / "job.yaml"
    path.write_text(f"name: h\nmodel: tiny\nclips:\n  - name: a\n    num_frames: 5000\n    prompts:\n{prompts}\n")
    assert cli.main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_plan_of_one_frame_segments_is_linear(tmp_path, capsys):
    """``segment_length: 1`` on a long clip: the plan (every segment listed) comes back at once."""
    path = tmp_path / "job.yaml"
    path.write_text("name: h\nmodel: tiny\nclips: [{name: a, num_frames: 30000, segment_length: 1, blend: 0, "
                    "prompts: {0: x}}]\n")
    started = time.perf_counter()
    assert cli.main(["plan", str(path)]) == 0
    assert time.perf_counter() - started < 20
    assert "a/29999  frames 29999-29999" in capsys.readouterr().out


# --- a failing disk ------------------------------------------------------------------------------


def test_a_failed_local_write_leaves_the_old_file_whole(tmp_path):
    from deforum_ray.store import TEMPORARY, replace_local_file

    path = tmp_path / "sub" / "video.mp4"
    replace_local_file(str(path), lambda handle: handle.write(b"good"))

    def fails_halfway(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device: .*video.mp4'$"):  # the object, not its temporary
        replace_local_file(str(path), fails_halfway)
    assert path.read_bytes() == b"good" and not list(path.parent.glob(f"*{TEMPORARY}"))


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs (needs root; skipped otherwise)."""
    import os
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("the disk-full test mounts a small tmpfs, which needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_never_replaces_a_finished_video(small_disk, tmp_path, capsys, ray_cluster):
    """Re-encoding a finished job (``output.crf`` lowered: a larger video) on a nearly full disk
    fails with one line naming the disk's complaint, and the previous videos, sheets and markers are untouched;
    with room again the same command re-encodes."""
    import hashlib
    import os

    from conftest import only_job_dir, render_here, resume_job

    out = small_disk / "renders"
    job = resume_job(tmp_path, frames=12, width=256, height=256, output={"uri": str(out), "crf": 14})
    code, _, err = render_here(capsys, str(job))
    assert code == 0, err
    job_dir = only_job_dir(out)
    finished = {p: hashlib.sha256(p.read_bytes()).digest() for p in job_dir.iterdir()  # videos, sheets, final.json
                if p.is_file() and p.name.removesuffix(".ok").endswith((".mp4", ".png", "final.json"))}
    assert any(p.suffix == ".mp4" for p in finished)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 48 * 1024))  # room for the small writes, not a video

    code, _, err = render_here(capsys, str(job), "output.crf=4")
    assert code == 1 and "No space left on device: " in err and str(job_dir) in err and "Traceback" not in err, err
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in finished} == finished
    assert not list(job_dir.rglob("*.tmp"))

    (small_disk / "filler").unlink()
    code, _, err = render_here(capsys, str(job), "output.crf=4")
    assert code == 0, err
    video = next(p for p in finished if p.suffix == ".mp4")
    assert hashlib.sha256(video.read_bytes()).digest() != finished[video]  # re-encoded at the new crf


def test_a_disk_that_fills_while_rendering_is_named_and_the_same_command_resumes(small_disk, tmp_path, capsys,
                                                                                ray_cluster):
    """Frames and checkpoints stop fitting mid-render: one line that says the disk is full and names
    the object, exit 1, every frame written so far intact; with room again the same command resumes."""
    import os

    from conftest import only_job_dir, render_here, resume_job

    out = small_disk / "renders"
    job = resume_job(tmp_path, frames=12, width=256, height=256, output={"uri": str(out)})
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 400 * 1024))  # the spec, a few frames, then full
    code, _, err = render_here(capsys, str(job))
    assert code == 1 and "No space left on device" in err and str(out) in err, err
    assert "Traceback" not in err and "ray::" not in err, err
    job_dir = only_job_dir(out)
    written = sorted(job_dir.rglob("frames/*.png"))
    assert written and not list(job_dir.rglob("*.tmp"))  # some frames made it, no partial object
    (small_disk / "filler").unlink()
    code, _, err = render_here(capsys, str(job))
    assert code == 0, err
    assert len(list(job_dir.rglob("frames/*.png"))) == 12 + 12  # both clips


# --- damage found by status --verify, repaired by the next render ----------------------------------


def tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, ray_cluster):
    """A finished two-clip render (frames, latents, checkpoints, videos), rendered once per module."""
    from conftest import only_job_dir, render_here, resume_job

    folder = tmp_path_factory.mktemp("finished")
    job = resume_job(folder, frames=12, output={"uri": str(folder / "renders")})
    assert render_here(None, str(job))[0] == 0
    return job, only_job_dir(folder / "renders")


def test_status_reads_and_never_writes_even_when_objects_are_damaged(finished_job, tmp_path, capsys):
    import shutil

    _, original = finished_job
    job_dir = tmp_path / original.name
    shutil.copytree(original, job_dir)
    (job_dir / "segments/short/0/DONE.json").write_text("garbage")
    for video in (job_dir / "resume.mp4", job_dir / "resume-long.mp4"):
        video.write_bytes(video.read_bytes()[:100])  # truncated
    before = tree(job_dir)
    assert cli.main(["status", str(job_dir)]) == 0
    out = capsys.readouterr().out
    assert tree(job_dir) == before  # no event file, nothing touched
    short = next(line for line in out.splitlines() if line.startswith("short"))
    assert short.split()[1:4] == ["12/12", "-", "0/1"]  # every frame there, the damaged DONE not counted
    assert "problem: corrupt segments/short/0/DONE.json" in out
    assert "video not encoded yet" in out and "clip long:" not in out and "clip short:" in out  # truncated: not listed

    (job_dir / "manifest.json").write_text("{}")
    before = tree(job_dir)
    assert cli.main(["status", str(job_dir)]) == 1
    err = capsys.readouterr().err
    assert "manifest.json is damaged (size 2 != " in err and "Traceback" not in err
    assert tree(job_dir) == before


def test_status_json_gives_what_the_table_gives(finished_job, tmp_path, capsys):
    import json
    import shutil

    _, original = finished_job
    job_dir = tmp_path / original.name
    shutil.copytree(original, job_dir)
    assert cli.main(["status", str(job_dir), "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)["jobs"]
    assert record["complete"] and record["frames_done"] == record["frames"] == 24
    assert record["video"].endswith("resume.mp4") and set(record["clip_videos"]) == {"long", "short"}
    assert [c["name"] for c in record["clips"]] == ["long", "short"] and record["problems"] == []
    flip_a_byte(next(job_dir.glob("segments/short/0/frames/*.png")))
    assert cli.main(["status", str(job_dir), "--json", "--verify"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert len(report["damaged"]) == 1 and report["damaged"][0]["unfinished"]
    assert not report["jobs"][0]["complete"]


def test_verify_finds_a_flipped_byte_and_the_next_render_repairs_it(finished_job, tmp_path, capsys):
    import shutil

    from conftest import render_here

    job, original = finished_job
    renders = tmp_path / "renders"
    shutil.copytree(original, renders / original.name)
    job_dir = renders / original.name
    frame = job_dir / "segments/long/0/frames/000007.png"
    latent = job_dir / "segments/short/0/latents/000003.safetensors"
    good = {frame: frame.read_bytes(), latent: latent.read_bytes()}
    flip_a_byte(frame)
    flip_a_byte(latent)
    capsys.readouterr()
    assert cli.main(["status", str(renders)]) == 0  # without --verify: listings only, as before
    capsys.readouterr()

    assert cli.main(["status", str(renders), "--verify"]) == 1
    err = capsys.readouterr().err
    assert f"damaged: {frame}: content hash mismatch; un-finished segments/long/0/DONE.json" in err
    assert f"damaged: {latent}: content hash mismatch; un-finished segments/short/0/DONE.json" in err
    assert "2 damaged objects; the same render command repairs them" in err

    code, _, err = render_here(capsys, str(job), f"output.uri={renders}")
    assert code == 0, err
    assert frame.read_bytes() == good[frame] and latent.read_bytes() == good[latent]  # repaired, bit for bit
    assert cli.main(["status", str(renders), "--verify"]) == 0


# --- ends: an unreachable cluster (SIGTERM: tests/test_crash.py) ---------------------------------------------------------


def test_an_unreachable_cluster_fails_fast_naming_it_and_writes_nothing(tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "job.yaml"
    out = tmp_path / "renders"
    path.write_text(job_text(out))
    started = time.perf_counter()
    code = cli.main(["render", str(path), f"cluster.address=127.0.0.1:{port}", "cluster.connect_timeout=5",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and time.perf_counter() - started < 20
    assert f"cluster.address 127.0.0.1:{port}: cannot reach a Ray cluster there" in err and "Traceback" not in err
    assert not out.exists()

    import http.server
    import threading

    silent = socket.socket()  # accepts (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers, not Ray
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        for where, expected in ((silent.getsockname(), "cannot reach a Ray cluster there (no answer within 2 s)"),
                                (web.server_address, "something answers there, but not a Ray cluster")):
            started = time.perf_counter()
            code = cli.main(["render", str(path), f"cluster.address=127.0.0.1:{where[1]}", "cluster.connect_timeout=2",
                             "--no-progress"])
            err = capsys.readouterr().err
            assert code == 1 and time.perf_counter() - started < 10 and expected in err, err
    finally:
        silent.close()
        web.shutdown()
    assert not out.exists()
    assert "cluster.connect_timeout: must be" in refused(capsys, "validate", str(path), "cluster.connect_timeout=0")
    assert "output.fps: must be [1, 960], got 0.001" in refused(capsys, "validate", str(path), "output.fps=0.001")
    assert "lives in one process's memory" in refused(capsys, "render", str(path), "output.uri=memory://x")
