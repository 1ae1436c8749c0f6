"""What a job spec names outside itself: init images and an audio track.

Each is checked while the spec is validated, before any model work, as cheaply as it allows: an
image by its header (its pixels bounded by :data:`~.limits.MAX_IMAGE_PIXELS`, so a decompression
bomb is refused before anything is decoded), a local audio file by ffmpeg decoding a moment of its
first audio stream, a remote track by its existence (a partial download cannot tell a bad file
from an mp4 whose index is at its end). Every check gives up after
:data:`~.limits.INPUT_TIMEOUT_S`: a named pipe or an S3 that does not answer fails in seconds, not
after botocore's retries. A check returns the problem as a phrase, or None.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import warnings
from pathlib import Path
from typing import IO, Any, Callable

from ..errors import first_line
from . import limits


def within_timeout(check: Callable[[], str | None], uri: str) -> str | None:
    """``check()``'s answer, or a timeout phrase once :data:`~.limits.INPUT_TIMEOUT_S` pass. The
    check runs on a daemon thread, which a stuck read cannot keep alive past the process."""
    seconds = limits.INPUT_TIMEOUT_S
    answer: list[str | None] = []

    def run() -> None:
        try:
            answer.append(check())
        except Exception as exc:  # noqa: BLE001 - any failure to read is the input's problem
            answer.append(f"cannot read {uri!r}: {first_line(exc)}")

    thread = threading.Thread(target=run, name="input-check", daemon=True)
    thread.start()
    thread.join(seconds)
    return answer[0] if answer else f"could not read {uri!r} within {seconds:g} s"


def local_path(uri: str) -> Path | None:
    """The local file a URI names (a plain path or ``file://``); None for a remote one."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        return None
    return Path(uri).expanduser()


def opened_image(handle: IO[bytes]) -> Any:
    """A PIL image from an open file, its header read and its pixels not yet decoded; raises
    ValueError naming the limit when it has more than :data:`~.limits.MAX_IMAGE_PIXELS`."""
    from PIL import Image

    limit = limits.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit decides
        try:
            image = Image.open(handle)
        except Image.DecompressionBombError:
            raise ValueError(f"more than the {limit:,} pixels an init image may have") from None
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ValueError(f"{width}x{height} is more than the {limit:,} pixels an init image may have")
    return image


def image_problem(uri: str) -> str | None:
    """Why the image at ``uri`` cannot be an init image, or None."""
    import fsspec
    from PIL import UnidentifiedImageError

    path = local_path(uri)
    if path is not None and not path.exists():
        return f"no such file {uri!r}"
    try:
        with fsspec.open(uri, "rb") as handle, opened_image(handle) as image:
            image.verify()
    except FileNotFoundError:
        return f"no such file {uri!r}"
    except (UnidentifiedImageError, SyntaxError) as exc:
        return f"{uri!r} is not a readable image ({first_line(exc)})"
    except (IsADirectoryError, PermissionError) as exc:
        return f"cannot read {uri!r}: {type(exc).__name__}"
    except ValueError as exc:
        return f"{uri!r}: {first_line(exc)}"
    return None


def ffmpeg_exe() -> str:
    """ffmpeg from the PATH, else the binary imageio-ffmpeg ships (so a plain pip install encodes)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def audio_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be the video's audio track, or None."""
    path = local_path(uri)
    if path is None:
        import fsspec

        fs, remote = fsspec.core.url_to_fs(uri)
        return None if fs.isfile(remote) else f"no such file {uri!r}"
    if not path.is_file():
        return f"no such file {uri!r}"
    # A moment of the first audio stream, decoded: no audio stream, or none ffmpeg can decode, fails.
    probe = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(path),
                            "-map", "0:a:0", "-t", "0.1", "-f", "null", "-"],
                           capture_output=True, text=True, timeout=limits.INPUT_TIMEOUT_S)
    if probe.returncode != 0:
        lines = [line for line in probe.stderr.splitlines() if line.strip()]
        return f"{uri!r} has no audio ffmpeg can read ({lines[-1].strip() if lines else f'exit {probe.returncode}'})"
    return None
