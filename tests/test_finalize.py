"""The final stage with real ffmpeg, checked by decoding: counts, durations, loop order,
interpolation, crossfades, contact sheets, audio, idempotence and missing frames.

Frames are written straight into a job folder (no model): frame n of a clip is a gradient whose
brightness rises with n and a square that moves right, so order and in-betweens can be checked.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from deforum_ray.render.driver import manifest
from deforum_ray.post.finalize import FinalizeError, clip_sequence, ContactSheet, ffmpeg_exe, finalize, interpolated, stored_frames
from deforum_ray.job.plan import plan
from deforum_ray.job.spec import load_job
from deforum_ray.store import RenderStore
from deforum_ray.render.resume import write_done

SIZE = 32
LENGTHS = {"a": 5, "b": 4}


def picture(n: int, clip: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([20 + 24 * n + x, 40 + 2 * y + 30 * clip, 60 + 20 * n + 0 * x], axis=-1)
    rgb[8:16, 2 + 3 * n : 10 + 3 * n] = 250  # a square moving 3 px a frame
    return np.clip(rgb, 0, 255).astype(np.uint8)


def job_folder(tmp_path: Path, *overrides: str, clips: int = 2):
    """A job folder whose clips are fully rendered (frames and DONE markers), and its spec/plan."""
    names = list(LENGTHS)[:clips]
    job = {"name": "demo", "model": "tiny", "width": SIZE, "height": SIZE, "fps": 10,
           "clips": [{"name": name, "num_frames": LENGTHS[name], "prompts": {0: "a test card"}} for name in names]}
    spec = load_job(job, [f"output.uri={tmp_path}", *overrides])
    render_plan = plan(spec)
    store = RenderStore(render_plan.output_dir)
    store.write_json("manifest.json", manifest(render_plan))
    for i, clip in enumerate(render_plan.clips[: len(names)]):
        for seg in clip.segments:
            for n in range(seg.start, seg.stop):
                store.put_tensors(store.latent_rel(clip.name, seg.index, n),
                                  {"latent": torch.full((1, 16, SIZE // 8, SIZE // 8), float(n), dtype=torch.float16)})
                store.write_frame(clip.name, seg.index, n, picture(n, i))
            write_done(store, clip.name, seg, {})
            assert store.read_json(store.done_rel(clip.name, seg.index)) is not None
    return spec, render_plan, store


def decoded(path: str) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def seconds(path: str) -> float:
    """The container's duration, as ffmpeg prints it (to the centisecond)."""
    return imageio_ffmpeg.count_frames_and_secs(path)[1]


def stream_fps(path: str) -> float:
    reader = imageio_ffmpeg.read_frames(path)
    fps = next(reader)["fps"]
    reader.close()
    return fps


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


COMBOS = [(k, loop, clips, transition) for k, loop, clips, transition in
          itertools.product((1, 2, 4, 8), (False, True), (1, 2), ("cut", "crossfade")) if clips == 2 or transition == "cut"]


@pytest.mark.parametrize(("k", "loop", "clips", "transition"), COMBOS)
def test_frame_counts_and_durations_are_exact(tmp_path, k, loop, clips, transition):
    spec, render_plan, store = job_folder(tmp_path, f"post.interpolation={k}", f"post.loop={loop}",
                                          f"post.transition={transition}", "post.crossfade_frames=2", clips=clips)
    per_clip = []
    for name, n in list(LENGTHS.items())[:clips]:
        m = (n - 1) * k + 1
        per_clip.append(2 * m - 2 if loop else m)
    expected = sum(per_clip) - (2 * (clips - 1) if transition == "crossfade" else 0)
    result = finalize(store, render_plan, spec)
    assert result.frames == expected == render_plan.video_frames
    assert result.fps == 10 * k
    frames = decoded(result.video)
    assert len(frames) == expected
    assert stream_fps(result.video) == 10 * k  # so the duration is exactly frames / fps
    assert abs(seconds(result.video) - expected / (10 * k)) <= 0.0051
    if clips == 2:  # each clip's own video beside the joined one, without crossfades
        assert [len(decoded(result.clip_videos[name])) for name in ("a", "b")] == per_clip
    else:
        assert result.clip_videos == {}


@pytest.mark.parametrize("k", [2, 8])
def test_motion_compensated_interpolation_loops_with_exact_counts(tmp_path, k):
    spec, render_plan, store = job_folder(tmp_path, f"post.interpolation={k}", "post.interpolation_method=ffmpeg",
                                          "post.loop=true", "post.transition=crossfade", "post.crossfade_frames=3",
                                          "output.crf=0")  # lossless luma: the same frame decodes the same anywhere
    a, b = (5 - 1) * k + 1, (4 - 1) * k + 1
    result = finalize(store, render_plan, spec)
    frames = decoded(result.video)
    assert len(frames) == (2 * a - 2) + (2 * b - 2) - 3 == render_plan.video_frames
    clip_a = decoded(result.clip_videos["a"])
    assert len(clip_a) == 2 * a - 2
    for i in range(1, a - 1):  # the way back is the way forward reversed (read back from the spool)
        assert mad(clip_a[i], clip_a[2 * a - 2 - i]) < 0.5


def test_a_looped_clip_plays_forward_then_back_without_repeating_its_ends(tmp_path):
    spec, render_plan, store = job_folder(tmp_path, "post.loop=true", "clips.0.num_frames=6", clips=1)
    frames = decoded(finalize(store, render_plan, spec).video)
    order = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert len(frames) == 2 * 6 - 2
    for got, n in zip(frames, order):
        errors = [mad(got, picture(j)) for j in range(6)]
        assert int(np.argmin(errors)) == n and errors[n] < 3.0  # within codec error, and nearest to its own


@pytest.mark.parametrize("method", ["blend", "ffmpeg"])
def test_in_between_frames_lie_between_their_neighbours(tmp_path, method):
    spec, render_plan, store = job_folder(tmp_path, "post.interpolation=4", f"post.interpolation_method={method}",
                                          clips=1)
    clip = render_plan.clips[0]
    out = list(interpolated(lambda: stored_frames(store, clip), clip.num_frames, 4, method, spec.fps))
    assert len(out) == (5 - 1) * 4 + 1
    for n in range(4):
        a, b = picture(n), picture(n + 1)
        assert np.array_equal(out[4 * n], a)  # rendered frames pass through untouched
        for mid in out[4 * n + 1 : 4 * n + 4]:
            assert mad(mid, a) < mad(a, b) and mad(mid, b) < mad(a, b)
    assert np.array_equal(out[-1], picture(4))


def test_a_crossfade_blends_the_end_of_one_clip_into_the_start_of_the_next(tmp_path):
    spec, render_plan, store = job_folder(tmp_path, "post.transition=crossfade", "post.crossfade_frames=2")
    frames = decoded(finalize(store, render_plan, spec).video)
    assert len(frames) == 5 + 4 - 2
    assert mad(frames[2], picture(2, 0)) < 3.0  # a's frames before the fade
    for i, (end, start) in enumerate([(3, 0), (4, 1)]):  # a3 with b0, then a4 with b1
        mixed, a, b = frames[3 + i], picture(end, 0), picture(start, 1)
        assert mad(mixed, a) < mad(a, b) and mad(mixed, b) < mad(a, b)
    assert mad(frames[5], picture(2, 1)) < 3.0 and mad(frames[6], picture(3, 1)) < 3.0


def test_contact_sheets_and_status_name_where_they_are(tmp_path):
    from deforum_ray.status import format_status, job_status

    spec, render_plan, store = job_folder(tmp_path, "post.contact_sheet_every=2")
    result = finalize(store, render_plan, spec)
    sheet = Image.open(result.contact_sheets["a"])
    columns, rows = 3, 1  # frames 0, 2, 4 of clip a
    assert sheet.size == (columns * (SIZE + 4) + 4, rows * (SIZE + 14 + 4) + 4)
    top_left = np.asarray(sheet)[4 : 4 + SIZE, 4 : 4 + SIZE]
    assert mad(top_left, picture(0)) < 2.0 and mad(np.asarray(sheet)[4 : 4 + SIZE, 40 : 40 + SIZE], picture(2)) < 2.0
    text = format_status(job_status(store))
    assert f"contact sheet a: {result.contact_sheets['a']}" in text and f"clip b: {result.clip_videos['b']}" in text


def test_a_second_run_only_reports_and_a_changed_setting_encodes_again(tmp_path):
    spec, render_plan, store = job_folder(tmp_path)
    first = finalize(store, render_plan, spec)
    video = Path(first.video)
    stamp = video.stat().st_mtime_ns
    again = finalize(store, render_plan, spec)
    assert (first.encoded, again.encoded) == (True, False) and again.video == first.video
    assert video.stat().st_mtime_ns == stamp
    video.unlink()  # a deliverable gone (its marker left behind): made again
    assert finalize(store, render_plan, spec).encoded and video.is_file()
    spec2, plan2, _ = job_folder(tmp_path, "post.interpolation=2")  # same frames, new post settings
    assert plan2.output_dir == render_plan.output_dir
    third = finalize(store, plan2, spec2)
    assert third.encoded and len(decoded(third.video)) == plan2.video_frames


@pytest.mark.parametrize("method", ["ffmpeg", "blend"])
def test_a_missing_frame_fails_the_stage_naming_clip_and_frame(tmp_path, method):
    spec, render_plan, store = job_folder(tmp_path, "post.interpolation=2", f"post.interpolation_method={method}")
    (Path(store.path(store.frame_rel("b", 0, 2))).with_name("000002.png.ok")).unlink()
    with pytest.raises(FinalizeError, match=r"^clip 'b': frame 2 is missing or corrupt in the store"):
        finalize(store, render_plan, spec)  # ffmpeg's own interpolation, fed short, must not wait forever
    assert not Path(store.path("demo.mp4")).exists()  # no short video
    assert store.read_json(store.done_rel("b", 0)) is None  # so the next render redoes that segment
    assert store.read_json(store.done_rel("a", 0)) is not None


def test_audio_is_muxed_in_and_trimmed_to_the_video(tmp_path):
    tone = tmp_path / "tone.wav"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=5", str(tone)], check=True)
    spec, render_plan, store = job_folder(tmp_path, f"output.audio={tone}", "output.fps=4")
    result = finalize(store, render_plan, spec)
    assert result.fps == 4 and len(decoded(result.video)) == 9
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", result.video, "-map", "0:a", "-f", "null", "-"],
                           capture_output=True, text=True)
    assert "Audio: aac" in probe.stderr
    times = re.findall(r"time=(\d+):(\d+):([\d.]+)", probe.stderr)
    h, m, s = times[-1]
    assert float(s) + 60 * int(m) == pytest.approx(9 / 4, abs=0.05)  # 5 s of tone trimmed to 2.25 s of video


def test_clip_sequence_streams(tmp_path):
    spec, render_plan, store = job_folder(tmp_path, "post.loop=true", "post.interpolation=2", clips=1)
    sheet = ContactSheet(1, SIZE, SIZE)
    frames = clip_sequence(store, render_plan.clips[0], spec, sheet, str(tmp_path))
    first = next(frames)  # a generator: the first frame comes before the clip is read whole
    assert np.array_equal(first, picture(0)) and len(sheet.thumbs) <= 8


def test_latent_in_betweens_are_decoded_slerps_of_the_stored_latents(tmp_path):
    """A real tiny render (frames and their latents), interpolated x4 in latent space on a worker."""
    from deforum_ray.render.local import render_local
    from deforum_ray.render.worker import FluxWorker

    spec = load_job({"name": "lat", "model": "tiny", "width": 64, "height": 64, "fps": 10, "noise_mode": "slerp",
                     "motion": {"translation_x": "0:(4)"}, "num_frames": 6, "prompts": {0: "a red fox"}},
                    [f"output.uri={tmp_path}", "post.interpolation=4", "post.interpolation_method=latent",
                     "post.loop=true"])
    render_plan = plan(spec)
    store = RenderStore(render_plan.output_dir)
    worker = FluxWorker(spec.model, device="cpu")
    render_local(worker, spec, "lat", store.uri)
    store.write_json("manifest.json", manifest(render_plan))
    calls: list[int] = []

    def decoder(latents):
        calls.append(len(latents))
        return worker.decode(latents)

    clip = render_plan.clips[0]
    rendered = list(stored_frames(store, clip))
    out = list(interpolated(lambda: stored_frames(store, clip), 6, 4, "latent", spec.fps,
                            lambda: stored_frames(store, clip, latents=True), decoder))
    assert len(out) == 21 and calls == [3] * 5  # 3 in-betweens per pair, decoded in one call each
    for n in range(5):
        a, b = rendered[n], rendered[n + 1]
        assert np.array_equal(out[4 * n], a)
        for mid in out[4 * n + 1 : 4 * n + 4]:
            assert mad(mid, a) < mad(a, b) and mad(mid, b) < mad(a, b)
    result = finalize(store, render_plan, spec, decoder)
    assert result.frames == 2 * 21 - 2 == len(decoded(result.video))
    store.fs.rm(store.path(store.latent_rel("lat", 0, 3)) + ".ok")
    store.fs.rm(store.path("final.json.ok"))
    with pytest.raises(FinalizeError, match=r"^clip 'lat': latent 3 is missing or corrupt"):
        finalize(store, render_plan, spec, decoder)
