"""The final stage (CPU): interpolation, looping, concatenation, encoding with ffmpeg.

ffmpeg is the binary imageio-ffmpeg ships, so a plain ``pip install`` can encode.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
from typing import Iterable, Sequence

import numpy as np

from .plan import RenderPlan
from .spec import JobSpec
from .store import RenderStore


class EncodeError(RuntimeError):
    """ffmpeg failed; the message is its last line of output."""


def interpolate(frames: Sequence[np.ndarray], factor: int) -> list[np.ndarray]:
    """``factor - 1`` blended frames between each pair: n frames become (n - 1) * factor + 1."""
    if factor <= 1 or len(frames) < 2:
        return list(frames)
    out: list[np.ndarray] = []
    for a, b in zip(frames[:-1], frames[1:]):
        fa, fb = a.astype(np.float32), b.astype(np.float32)
        out.append(a)
        for i in range(1, factor):
            w = i / factor
            out.append(np.clip(np.round((1 - w) * fa + w * fb), 0, 255).astype(np.uint8))
    out.append(frames[-1])
    return out


def ping_pong(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Append the frames reversed, without repeating either end, so the video loops seamlessly."""
    return list(frames) + list(frames[-2:0:-1]) if len(frames) > 2 else list(frames)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_video(frames: Iterable[np.ndarray], path: str, fps: float, codec: str = "libx264", crf: int = 18) -> int:
    """Encode RGB uint8 frames into a video file; returns the frame count."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise EncodeError("no frames to encode")
    height, width = first.shape[:2]
    command = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
        "-an", "-c:v", codec, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-fflags", "+bitexact", "-flags:v", "+bitexact", path,
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        count = 0
        try:
            for frame in itertools.chain([first], frames):
                process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
                count += 1
        except BrokenPipeError:
            pass  # ffmpeg died; its exit code and log say why
        finally:
            process.stdin.close()
            code = process.wait()
        if code != 0:
            log.seek(0)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
            raise EncodeError(f"ffmpeg exited with {code}: {lines[-1] if lines else 'no output'}")
    return count


def video_frames(store: RenderStore, plan: RenderPlan, spec: JobSpec) -> list[np.ndarray]:
    """Every clip's frames in order, each clip interpolated on its own (clips cut, never blend),
    then the whole sequence looped if asked."""
    frames: list[np.ndarray] = []
    for clip in plan.clips:
        clip_frames = [store.read_frame(clip.name, seg.index, n) for seg in clip.segments for n in range(seg.start, seg.stop)]
        frames.extend(interpolate(clip_frames, spec.post.interpolation))
    return ping_pong(frames) if spec.post.loop else frames


def finalize(store: RenderStore, plan: RenderPlan, spec: JobSpec) -> str:
    """Encode the job's video into the store; returns its URI (a plain path when local)."""
    rel = f"{plan.job_name}.mp4"
    with tempfile.TemporaryDirectory(prefix="deforum-ray-") as tmp:
        local = os.path.join(tmp, rel)
        encode_video(video_frames(store, plan, spec), local, spec.fps, spec.output.codec, spec.output.crf)
        store.put_file(local, rel)  # written whole, only once encoding succeeded
    return store.url(rel)
