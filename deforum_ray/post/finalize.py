"""The final stage (CPU): stored frames -> interpolation -> loop -> join -> encoded videos.

Per clip, in order: frame interpolation x1/2/4/8 (n frames become (n - 1) * k + 1), then the
loop (forward, then back without repeating either end: 2m - 2 frames); then the clips are joined
in spec order with a cut or a crossfade. Frames stream from the store through these stages into
ffmpeg's stdin, so nothing holds a clip in memory; the joined video and each clip's own video
are encoded in the same pass. A contact sheet per clip shows every k-th rendered frame.

Every output is uploaded whole and vouched for by a marker; ``final.json`` is written last and
names the frames and settings it was made from, so a re-run with nothing changed only reports
where the video is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..job.inputs import ffmpeg_exe
from ..job.plan import ClipPlan, RenderPlan
from ..job.spec import JobSpec
from ..store import RenderStore

FINAL = "final.json"


class EncodeError(RuntimeError):
    """ffmpeg failed; the message is its last line of output."""


class FinalizeError(RuntimeError):
    """The final stage cannot make the video; one line naming the clip and frame."""


@dataclass(frozen=True)
class FinalResult:
    video: str  # the joined video's URI (a plain path when local)
    clip_videos: dict[str, str]
    contact_sheets: dict[str, str]
    frames: int
    fps: float
    encoded: bool  # False: everything was already there


# ---------------------------------------------------------------------------------------------
# Frames in: the store, one small batch at a time


READ_AHEAD = 2  # chunks of frames fetched and decoding while the encoder takes the one before
DECODE_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
SegmentWait = Callable[[str, int], Any]  # (clip, segment index): returns once that segment is final in the store


def stored_frames(store: RenderStore, clip: ClipPlan, reverse: bool = False, batch: int = 8,
                  latents: bool = False, ready: SegmentWait | None = None) -> Iterator[Any]:
    """A clip's rendered frames (or their latents) from the store, in order or reversed, a few
    fetched at a time. ``ready`` waits for a segment still rendering (the stage made while the
    job renders, ``render.following``); without it every frame must be there.

    The next chunks are fetched on a thread and decoded on a few more while the caller encodes
    this one (PNG decoding releases the GIL): the reading keeps pace with ffmpeg. A missing frame
    is raised when the caller reaches it."""
    from concurrent.futures import Future, ThreadPoolExecutor

    where = {n: seg.index for seg in clip.segments for n in range(seg.start, seg.stop)}
    rel = store.latent_rel if latents else store.frame_rel
    order = list(range(clip.num_frames))[:: -1 if reverse else 1]
    # Fetched within one segment at a time: a segment's frames are read as soon as it is final.
    runs = [list(run) for _, run in itertools.groupby(order, key=where.__getitem__)]
    chunks = deque(run[i : i + batch] for run in runs for i in range(0, len(run), batch))
    fetcher, decoders = ThreadPoolExecutor(1), ThreadPoolExecutor(DECODE_THREADS)

    def decode(n: int, data: bytes | None) -> Any:
        if data is None:
            store.discard(store.done_rel(clip.name, where[n]))  # so the next run renders it again
            what = "latent" if latents else "frame"
            raise FinalizeError(f"clip {clip.name!r}: {what} {n} is missing or corrupt in the store "
                                f"({store.url(rel(clip.name, where[n], n))}); run the job again to render it again")
        if latents:
            from safetensors.torch import load

            return load(data)["latent"].float()
        from ..store import decode_png

        return decode_png(data)

    def fetch(chunk: list[int]) -> list[Future]:
        if ready is not None:
            ready(clip.name, where[chunk[0]])
        fetched = store.get_many([rel(clip.name, where[n], n) for n in chunk])
        return [decoders.submit(decode, n, fetched[rel(clip.name, where[n], n)]) for n in chunk]

    ahead: deque[Future] = deque()
    try:
        while chunks or ahead:
            while chunks and len(ahead) < READ_AHEAD:
                ahead.append(fetcher.submit(fetch, chunks.popleft()))
            for frame in ahead.popleft().result():
                yield frame.result()
    finally:  # a caller that stopped early (ffmpeg had its frames, or failed) leaves nothing running
        fetcher.shutdown(wait=False, cancel_futures=True)
        decoders.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Interpolation: (n - 1) * k + 1 frames out of n


def blend(frames: Iterable[np.ndarray], factor: int) -> Iterator[np.ndarray]:
    """``factor - 1`` linear blends between each pair of neighbours."""
    previous = None
    for frame in frames:
        if previous is not None:
            a, b = previous.astype(np.float32), frame.astype(np.float32)
            for i in range(1, factor):
                w = i / factor
                yield np.clip(np.round((1 - w) * a + w * b), 0, 255).astype(np.uint8)
        yield frame
        previous = frame


def minterpolate(frames: Iterable[np.ndarray], factor: int, count: int, fps: float) -> Iterator[np.ndarray]:
    """ffmpeg's motion-compensated ``minterpolate`` to ``fps * factor``: exactly
    ``(count - 1) * factor + 1`` frames, every ``factor``-th one the rendered frame itself (ffmpeg
    would round it through YUV). Frames stream through ffmpeg's stdin and stdout."""
    import queue

    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    wanted = (count - 1) * factor + 1
    # tpad: minterpolate stops before the last input frame's interval unless a frame follows it.
    # scd=none: its scene-change detection would repeat frames instead of interpolating big changes.
    vf = f"tpad=stop_mode=clone:stop=2,minterpolate=fps={fps * factor:g}:mi_mode=mci:mc_mode=aobmc:vsbmc=1:scd=none"
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-", "-vf", vf,
               "-frames:v", str(wanted), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    originals: queue.Queue[np.ndarray | None] = queue.Queue()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for frame in itertools.chain([first], frames):
                originals.put(frame)
                process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg has all it wants, or died: its exit code says which
        except BaseException as exc:  # a missing frame: stop ffmpeg, re-raise below
            failure.append(exc)
        finally:
            originals.put(None)  # ffmpeg pads past the last frame fed: never wait for one that won't come
            process.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    size = width * height * 3
    produced = 0
    try:
        while produced < wanted:
            data = process.stdout.read(size)
            if len(data) < size:
                break
            out = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            if produced % factor == 0:
                original = originals.get()
                if original is None:
                    break
                out = original
            produced += 1
            yield out
    finally:
        process.stdout.close()
        feeder.join()
        code = process.wait()
    if failure:
        raise failure[0]
    if produced < wanted:
        reason = _last_line(process.stderr.read()) if code else f"{produced} frames"
        raise EncodeError(f"ffmpeg minterpolate gave {reason}, expected {wanted} frames")


Decoder = Callable[[list[Any]], list[np.ndarray]]  # latents -> RGB frames, on a worker with the VAE


def slerped(frames: Iterable[np.ndarray], latents: Iterable[Any], factor: int, decoder: Decoder) -> Iterator[np.ndarray]:
    """In-betweens decoded from spherical interpolations of neighbouring frames' latents; the
    rendered frames themselves pass through."""
    from ..frame.noise import slerp

    previous = None
    for frame, latent in zip(frames, latents):
        if previous is not None:
            yield from decoder([slerp(previous, latent, i / factor) for i in range(1, factor)])
        yield frame
        previous = latent


def interpolated(source: Callable[[], Iterator[np.ndarray]], count: int, factor: int, method: str,
                 fps: float, latents: Callable[[], Iterator[Any]] | None = None,
                 decoder: Decoder | None = None) -> Iterator[np.ndarray]:
    if factor == 1 or count < 2:
        return source()
    if method == "ffmpeg":
        return minterpolate(source(), factor, count, fps)
    if method == "latent":
        if latents is None or decoder is None:
            raise FinalizeError("post.interpolation_method latent needs the stored latents and a worker to decode")
        return slerped(source(), latents(), factor, decoder)
    return blend(source(), factor)


# ---------------------------------------------------------------------------------------------
# Frames out: ffmpeg encoders, contact sheets


class VideoEncoder:
    """One ffmpeg process encoding RGB frames from its stdin into ``path`` (H.264 yuv420p by
    default), with an optional audio track trimmed to ``duration``."""

    def __init__(self, path: str, width: int, height: int, fps: float, codec: str = "libx264", crf: int = 18,
                 audio: str | None = None, duration: float | None = None):
        import ffmpeg

        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=f"{fps:g}")
        streams = [video]
        options: dict[str, Any] = {"vcodec": codec, "crf": crf, "pix_fmt": "yuv420p", "movflags": "+faststart",
                                   "fflags": "+bitexact", "flags:v": "+bitexact"}
        if audio is not None:
            streams.append(ffmpeg.input(audio, t=f"{duration:.6f}").audio)  # trimmed to the video
            options.update(acodec="aac", **{"b:a": "192k"})
        else:
            options["an"] = None
        command = ffmpeg.output(*streams, path, **options).global_args("-hide_banner", "-loglevel", "error")
        self.args = command.overwrite_output().compile(cmd=ffmpeg_exe())
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log)
        self.count = 0
        self.path = path

    def write(self, frame: np.ndarray) -> None:
        try:
            self.process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            self.close()  # raises with ffmpeg's own reason
            raise EncodeError("ffmpeg stopped reading frames")
        self.count += 1

    def end_input(self) -> None:
        """No more frames: ffmpeg encodes what it holds (x264 keeps up to 40 frames to look ahead)
        while the caller goes on; :meth:`close` waits for it."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()

    def close(self) -> int:
        self.end_input()
        code = self.process.wait()
        if code != 0:
            self.log.seek(0)
            raise EncodeError(f"ffmpeg exited with {code} writing {os.path.basename(self.path)}: "
                              f"{_last_line(self.log.read())}")
        if self.count == 0:
            raise EncodeError("no frames to encode")
        return self.count

    def abort(self) -> None:
        self.process.kill()
        self.process.wait()


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class ContactSheet:
    """Thumbnails of every ``every``-th frame, numbered, in a grid: a render judged at a glance."""

    def __init__(self, every: int, width: int, height: int, thumb_width: int = 160, columns: int = 6):
        self.every = every
        self.scale = min(1.0, thumb_width / width)
        self.size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        self.columns = columns
        self.thumbs: list[tuple[int, Any]] = []

    def offer(self, frame_index: int, rgb: np.ndarray) -> None:
        if frame_index % self.every == 0:
            from PIL import Image

            self.thumbs.append((frame_index, Image.fromarray(rgb).resize(self.size, Image.BILINEAR)))

    def png(self) -> bytes:
        import io

        from PIL import Image, ImageDraw

        label = 14
        w, h = self.size
        columns = min(self.columns, len(self.thumbs))
        rows = math.ceil(len(self.thumbs) / columns)
        sheet = Image.new("RGB", (columns * (w + 4) + 4, rows * (h + label + 4) + 4), (24, 24, 24))
        draw = ImageDraw.Draw(sheet)
        for i, (frame, thumb) in enumerate(self.thumbs):
            x, y = 4 + (i % columns) * (w + 4), 4 + (i // columns) * (h + label + 4)
            sheet.paste(thumb, (x, y))
            draw.text((x + 2, y + h + 1), f"frame {frame}", fill=(235, 235, 235))
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG", compress_level=1)  # zlib's 6 took 0.7 s of the final stage's tail
        return buffer.getvalue()


def sheet_every(num_frames: int, every: int | None) -> int:
    return every or max(1, math.ceil(num_frames / 24))


# ---------------------------------------------------------------------------------------------
# One clip, then the join


def clip_sequence(store: RenderStore, clip: ClipPlan, spec: JobSpec, sheet: ContactSheet,
                  spool_dir: str, decoder: Decoder | None = None, ready: SegmentWait | None = None) -> Iterator[np.ndarray]:
    """A clip's output frames: interpolated, then looped. The loop's way back is generated again
    from the store (blend and slerp are symmetric) or, for ffmpeg's motion-compensated frames,
    read back from a spool file on local disk. ``ready`` is waited on only going forward: the
    way back starts after the last frame."""
    post = spec.post
    k, method = post.interpolation, post.interpolation_method

    def forward_latents() -> Iterator[Any]:
        return stored_frames(store, clip, latents=True, ready=ready)

    def interpolate(source: Callable[[], Iterator[np.ndarray]], latents: Callable[[], Iterator[Any]]):
        return interpolated(source, clip.num_frames, k, method, spec.fps, latents, decoder)

    def forward_source() -> Iterator[np.ndarray]:
        for n, rgb in enumerate(stored_frames(store, clip, ready=ready)):
            sheet.offer(n, rgb)
            yield rgb

    m = (clip.num_frames - 1) * k + 1 if clip.num_frames > 1 else 1
    loop = post.loop and m > 2
    if not loop:
        yield from interpolate(forward_source, forward_latents)
        return
    if method != "ffmpeg" or k == 1:
        yield from interpolate(forward_source, forward_latents)
        back = interpolate(lambda: stored_frames(store, clip, reverse=True),
                           lambda: stored_frames(store, clip, reverse=True, latents=True))
        yield from itertools.islice(back, 1, m - 1)  # f(m-2) ... f1
        return
    spool = np.lib.format.open_memmap(os.path.join(spool_dir, f"{clip.name}.npy"), mode="w+", dtype=np.uint8,
                                      shape=(m, spec.height, spec.width, 3))
    for i, frame in enumerate(interpolate(forward_source, forward_latents)):
        spool[i] = frame
        yield frame
    for i in range(m - 2, 0, -1):
        yield np.array(spool[i])


class Joiner:
    """Writes clips one after another into the joined video: a cut, or a crossfade of ``fade``
    frames where the end of one clip and the start of the next are blended."""

    def __init__(self, encoder: VideoEncoder, fade: int):
        self.encoder, self.fade = encoder, fade
        self.held: deque[np.ndarray] = deque()  # this clip's last frames, not yet written
        self.tail: deque[np.ndarray] = deque()  # the previous clip's last frames, to fade from

    def start_clip(self) -> None:
        self.tail, self.held = self.held, deque()

    def write(self, frame: np.ndarray) -> None:
        if self.fade == 0:
            self.encoder.write(frame)
            return
        if self.tail:  # inside the crossfade: the next of the previous clip's last frames, fading out
            alpha = (self.fade - len(self.tail) + 1) / (self.fade + 1)
            mixed = np.round((1 - alpha) * self.tail.popleft().astype(np.float32) + alpha * frame.astype(np.float32))
            self.encoder.write(np.clip(mixed, 0, 255).astype(np.uint8))
            return
        self.held.append(frame)
        if len(self.held) > self.fade:
            self.encoder.write(self.held.popleft())

    def finish(self) -> None:
        while self.held:
            self.encoder.write(self.held.popleft())


# ---------------------------------------------------------------------------------------------
# The stage


def output_fps(spec: JobSpec) -> float:
    return spec.output.fps or spec.fps * spec.post.interpolation


def output_names(plan: RenderPlan) -> tuple[str, dict[str, str], dict[str, str]]:
    """(joined video, per-clip videos, contact sheets), relative to the job folder."""
    several = len(plan.clips) > 1
    videos = {c.name: f"{plan.job_name}-{c.name}.mp4" for c in plan.clips} if several else {}
    sheets = {c.name: f"{plan.job_name}-{c.name}-sheet.png" for c in plan.clips}
    return f"{plan.job_name}.mp4", videos, sheets


def final_key(store: RenderStore, plan: RenderPlan, spec: JobSpec) -> str:
    """What the deliverables are made of: every segment's frame hashes and every post/output
    setting that shapes them. Equal keys: nothing to do."""
    done = store.get_many([store.done_rel(s.clip, s.index) for s in plan.segments])
    settings = {"post": vars(spec.post), "codec": spec.output.codec, "crf": spec.output.crf, "fps": output_fps(spec),
                "audio": spec.output.audio, "frames": {rel: hashlib.sha256(d).hexdigest() if d else None
                                                       for rel, d in sorted(done.items())}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def made_outputs(store: RenderStore, plan: RenderPlan, spec: JobSpec) -> FinalResult | None:
    """The deliverables, when ``final.json`` vouches that they were made from exactly these frames
    and settings and every one of them is intact; else None."""
    video_rel, clip_rels, sheet_rels = output_names(plan)
    previous = store.read_json(FINAL)
    if not previous or previous.get("key") != final_key(store, plan, spec):
        return None
    if not all(store.intact(rel) for rel in [video_rel, *clip_rels.values(), *sheet_rels.values()]):
        return None
    return _result(store, video_rel, clip_rels, sheet_rels, previous["frames"], output_fps(spec), encoded=False)


def finalize(store: RenderStore, plan: RenderPlan, spec: JobSpec, decoder: Decoder | None = None,
             progress: Callable[[int], Any] | None = None, ready: SegmentWait | None = None) -> FinalResult:
    """Encode the job's deliverables into the store (or find them there already). ``decoder``
    turns latents into frames for ``interpolation_method: latent`` (called only when needed);
    ``progress`` hears how many frames of the joined video are encoded so far.

    With ``ready`` the stage runs while the job renders, each segment's frames read once
    ``ready`` says they are final: it always encodes (the frames are being made) and takes the
    key of what it made from the segments' markers at the end, when every one is written. The
    frames fed to each encoder, and so the videos, are the same either way."""
    if ready is None and (made := made_outputs(store, plan, spec)) is not None:
        return made
    video_rel, clip_rels, sheet_rels = output_names(plan)
    fps = output_fps(spec)
    fade, expected = plan.crossfade, plan.video_frames
    with tempfile.TemporaryDirectory(prefix="deforum-ray-") as tmp:
        audio = _local_audio(spec.output.audio, tmp) if spec.output.audio else None
        joined = VideoEncoder(os.path.join(tmp, video_rel), spec.width, spec.height, fps, spec.output.codec,
                              spec.output.crf, audio, expected / fps)
        encoders = [joined]
        try:
            joiner = Joiner(joined, fade)
            sheets: dict[str, bytes] = {}
            for clip in plan.clips:
                sheet = ContactSheet(sheet_every(clip.num_frames, spec.post.contact_sheet_every), spec.width, spec.height)
                own = None
                if clip.name in clip_rels:
                    own = VideoEncoder(os.path.join(tmp, clip_rels[clip.name]), spec.width, spec.height, fps,
                                       spec.output.codec, spec.output.crf)
                    encoders.append(own)
                joiner.start_clip()
                for frame in clip_sequence(store, clip, spec, sheet, tmp, decoder, ready):
                    joiner.write(frame)
                    if progress is not None:
                        progress(joined.count)
                    if own is not None:
                        own.write(frame)
                if own is not None:
                    own.end_input()  # its last frames encode while the next clip's are read
                sheets[clip.name] = sheet.png()
            joiner.finish()
            frames = joined.close()
            for own in encoders[1:]:
                own.close()
        except BaseException:
            for encoder in encoders:
                encoder.abort()
            raise
        if frames != expected:
            raise FinalizeError(f"the joined video has {frames} frames, expected {expected}")
        key = final_key(store, plan, spec)  # every segment is final by now
        for name, rel in sheet_rels.items():
            store.put(rel, sheets[name])
        for rel in clip_rels.values():
            store.put_file(os.path.join(tmp, rel), rel)
        store.put_file(os.path.join(tmp, video_rel), video_rel)  # each written whole, then vouched
    store.write_json(FINAL, {"key": key, "frames": frames, "fps": fps, "video": video_rel, "clips": clip_rels,
                             "contact_sheets": sheet_rels})
    return _result(store, video_rel, clip_rels, sheet_rels, frames, fps, encoded=True)


def _result(store: RenderStore, video_rel: str, clip_rels: dict[str, str], sheet_rels: dict[str, str], frames: int,
            fps: float, encoded: bool) -> FinalResult:
    return FinalResult(store.url(video_rel), {k: store.url(v) for k, v in clip_rels.items()},
                       {k: store.url(v) for k, v in sheet_rels.items()}, frames, fps, encoded)


def _local_audio(uri: str, tmp: str) -> str:
    """ffmpeg reads local files; a remote track is fetched first."""
    if "://" not in uri or uri.startswith("file://"):
        return uri[len("file://") :] if uri.startswith("file://") else uri
    import fsspec

    local = os.path.join(tmp, "audio" + os.path.splitext(uri)[1])
    with fsspec.open(uri, "rb") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return local
