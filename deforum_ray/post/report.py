"""A job's page, ``report.html`` in its folder, and an index page for a folder of jobs.

The page is self-contained: inline CSS, no script, every picture and video by a path relative to
the job folder (so it opens from a local folder, a synced copy or a bucket served as a website).
It shows the facts of :mod:`.facts`: the videos, each clip's contact sheet, the latest frame of
each chain, the progress and the time left, the runs that rendered it (frames/s over time per
worker and a histogram of seconds per frame, drawn with matplotlib as SVG beside the page, under
``report/``), which chains were resumed, every problem recorded under ``events/``, the plan and the
resolved spec. The final stage writes it after each render; ``deforum-ray status OUTPUT --html``
writes it for a job still rendering.
"""

from __future__ import annotations

import datetime
import html
import io
from typing import Any, Sequence

from ..store import RenderStore
from .facts import JobStatus, frame_rows, job_status

REPORT = "report.html"
INDEX = "index.html"
FPS_PLOT = "report/frames-per-second.svg"
SECONDS_PLOT = "report/seconds-per-frame.svg"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.state { font-size: 1.05em; } .done { color: #17692c; } .running { color: #8a5a00; } .bad { color: #b00020; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.media { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; } figcaption { color: #555; font-size: 0.9em; }
video { width: 20em; max-width: 100%; } img.sheet { width: 34em; max-width: 100%; } img.thumb { width: 96px; }
summary { cursor: pointer; color: #345; }
"""


def write_report(store: RenderStore, plots: Sequence[str] | None = None) -> str:
    """Write the job's page (and its plots, unless ``plots`` names them written already) into its
    folder; the page's URL."""
    rows = store.read_runlog()
    status = job_status(store, rows)
    if plots is None:
        plots = write_plots(store, rows)
    spec, plan = (store.get(rel) for rel in ("spec.yaml", "plan.txt"))
    page = job_page(status, plots, _text(spec), _text(plan))
    store.write_text(REPORT, page)
    return store.url(REPORT)


def write_plots(store: RenderStore, rows: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """The page's plots of the run log (``rows``, else read) into ``report/``: what they are
    called there (none for a job without frames). They need only the run log, so a driver draws
    them while its video is still encoding."""
    frames = frame_rows(store.read_runlog() if rows is None else rows)
    if not frames:
        return []
    store.put(FPS_PLOT, frames_per_second_svg(frames))
    store.put(SECONDS_PLOT, seconds_per_frame_svg(frames))
    return [FPS_PLOT, SECONDS_PLOT]


def write_index(parent: RenderStore, jobs: Sequence[tuple[str, JobStatus]]) -> str:
    """The index page of a folder of jobs: ``jobs`` are (folder name, status) pairs."""
    parent.write_text(INDEX, index_page(jobs))
    return parent.url(INDEX)


# -- the pages ------------------------------------------------------------------------------------

def job_page(status: JobStatus, plots: Sequence[str], spec: str | None, plan: str | None) -> str:
    s, e = status, html.escape
    parts = [f"<h1>{e(s.job)} <small>{e(s.job_id)}</small></h1>", f"<p class=state>{_state(s)}</p>"]
    if s.video or s.clip_videos:
        parts.append("<h2>Video</h2><div class=media>")
        for name, url in ([("the whole job", s.video)] if s.video else []) + list(s.clip_videos):
            parts.append(f"<figure><video controls loop muted preload=metadata src=\"{_src(s, url)}\"></video>"
                         f"<figcaption>{e(name)}</figcaption></figure>")
        parts.append("</div>")
    if s.contact_sheets:
        parts.append("<h2>Contact sheets</h2><div class=media>")
        for name, url in s.contact_sheets:
            parts.append(f"<figure><img class=sheet src=\"{_src(s, url)}\" alt=\"contact sheet of {e(name)}\">"
                         f"<figcaption>{e(name)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("<h2>Chains</h2>")
    parts.append(_table(("chain", "frames", "latest frame", "rendered by"), [
        (e(c.label), f"{c.frames_done}/{c.frames}",
         f"<img class=thumb src=\"{_src(s, c.latest)}\" alt=\"{e(c.latest)}\">" if c.latest else "-",
         "<br>".join(e(w) for w in c.workers) + (" <b>(resumed)</b>" if len(c.workers) > 1 else ""))
        for c in s.chains], numeric=(1,)))
    parts.append("<h2>Runs</h2>")
    if s.runs:
        parts.append(_table(("worker", "frames", "diffused", "frames/s", "from", "to"), [
            (e(r.worker), str(r.frames), str(r.diffused), f"{r.fps:.2f}", _time(r.started), _time(r.ended))
            for r in s.runs], numeric=(1, 2, 3)))
        resumed = [c.label for c in s.chains if len(c.workers) > 1]
        retried = [p for p in s.problems if p.get("kind") == "retry"]
        parts.append(f"<p>{len(s.runs)} worker run(s); resumed chains: {e(', '.join(resumed)) or 'none'}; "
                     f"retries: {len(retried)}</p>")
        parts += [f"<img src=\"{e(rel)}\" alt=\"{e(rel)}\">" for rel in plots]
    else:
        parts.append("<p>No frame logged yet.</p>")
    if s.starts:
        parts += start_section(s.starts[-1], len(s.starts))
    parts.append(f"<h2>Problems ({len(s.problems)})</h2>")
    if s.problems:
        parts.append(_table(("when", "kind", "object", "what", "worker"), [
            (_time(p.get("timestamp")), e(str(p.get("kind"))), e(str(p.get("object"))), e(str(p.get("message"))),
             e(str(p.get("worker", "")))) for p in s.problems], css="bad"))
    else:
        parts.append("<p>None recorded.</p>")
    if plan:
        parts.append(f"<h2>Plan</h2><pre>{e(plan)}</pre>")
    if spec:
        parts.append(f"<h2>Spec</h2><details><summary>the resolved spec (spec.yaml)</summary><pre>{e(spec)}</pre>"
                     "</details>")
    return _page(f"{s.job} {s.job_id}", parts)


def start_section(start: dict[str, Any], count: int) -> list[str]:
    """The latest render's start: each phase and its seconds, and each worker's model load."""
    def seconds(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, (int, float)) else "-"

    parts = [f"<h2>Start</h2><p>From the command to the first frame: {seconds(start.get('seconds'))} s "
             f"(the latest of {count} start{'s' if count > 1 else ''}, {_time(start.get('started_at'))}).</p>"]
    parts.append(_table(("phase", "seconds"), [(html.escape(str(p.get("phase", "?"))), seconds(p.get("seconds")))
                                               for p in start.get("phases", []) if isinstance(p, dict)],
                        numeric=(1,)))
    workers = [w for w in start.get("workers", []) if isinstance(w, dict)]
    if workers:
        parts.append(_table(("worker", "model load s", "compile cache"), [
            (html.escape(str(w.get("worker", "?"))), seconds(w.get("load_s")),
             html.escape(str(w.get("compile_cache") or "-")))
            for w in workers], numeric=(1,)))
    return parts


def index_page(jobs: Sequence[tuple[str, JobStatus]]) -> str:
    rows, e = [], html.escape
    for folder, s in jobs:
        thumb = s.contact_sheets[0][1] if s.contact_sheets else next((c.latest for c in s.chains if c.latest), None)
        picture = (f"<img class=thumb src=\"{e(folder)}/{_src(s, thumb)}\" alt=\"{e(s.job)}\">" if thumb else "-")
        video = f"<a href=\"{e(folder)}/{_src(s, s.video)}\">{e(s.rel(s.video))}</a>" if s.video else "-"
        rows.append((f"<a href=\"{e(folder)}/{REPORT}\">{e(s.job)}</a> <small>{e(s.job_id)}</small>", _state(s),
                     f"{s.frames_done}/{s.frames}", video, picture))
    body = [f"<h1>{len(jobs)} job(s)</h1>",
            _table(("job", "state", "frames", "video", "picture"), rows, numeric=(2,))]
    return _page("deforum-ray jobs", body)


def _state(s: JobStatus) -> str:
    problems = f", <span class=bad>{len(s.problems)} problem(s)</span>" if s.problems else ""
    if s.complete and s.video:
        return f"<span class=done>complete</span>: {s.frames} frames{problems}"
    left = f", about {duration_text(s.eta_s)} left at the last minute's rate" if s.eta_s is not None else ""
    what = "frames rendered, video not encoded yet" if s.complete else "frames rendered"
    return f"<span class=running>{s.frames_done}/{s.frames}</span> {what}{left}{problems}"


def _page(title: str, body: Sequence[str]) -> str:
    made = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><link rel=icon href=\"data:,\"><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<p><small>made by deforum-ray at {made}</small></p></body></html>\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (), css: str = "") -> str:
    """A table of cells already escaped (they may hold markup)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=n>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table class=\"{css}\"><tr>{head}</tr>{body}</table>"


def _src(status: JobStatus, url: str | None) -> str:
    return html.escape(status.rel(url or ""), quote=True)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def _time(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration_text(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


# -- the plots ------------------------------------------------------------------------------------

def frames_per_second_svg(frames: Sequence[dict[str, Any]]) -> bytes:
    """Frames/s of each worker over the job's time (``frames``: the run log's rows of frames, at
    least one), in bins of about a sixtieth of its span."""
    import numpy as np

    start = min(r["timestamp"] - r["seconds"] for r in frames)
    span = max(r["timestamp"] for r in frames) - start
    width = max(span / 60.0, 1.0)
    edges = np.arange(0.0, span + width, width)
    fig, ax = _figure()
    for worker in dict.fromkeys(r["worker"] for r in frames):
        times = np.array([r["timestamp"] - start for r in frames if r["worker"] == worker])
        counts, _ = np.histogram(times, bins=edges)
        ax.step(edges[:-1], counts / width, where="post", label=worker)
    ax.set_xlabel("seconds since the first frame")
    ax.set_ylabel("frames/s")
    ax.set_title("frames per second, per worker")
    ax.legend(fontsize=7)
    return _svg(fig)


def seconds_per_frame_svg(frames: Sequence[dict[str, Any]]) -> bytes:
    """How long each frame (the run log's rows of frames) took on its worker's thread (``seconds``)."""
    seconds = [r["seconds"] for r in frames]
    fig, ax = _figure()
    ax.hist(seconds, bins=min(40, max(5, len(seconds) // 4)), color="#4a78b0")
    ax.set_xlabel("seconds per frame")
    ax.set_ylabel("frames")
    ax.set_title(f"seconds per frame ({len(seconds)} frames)")
    return _svg(fig)


def load_plotting() -> None:
    """Import what the plots need (matplotlib's import is most of a page's time): a driver does it
    early, on a thread of its own."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display; a process that chose a backend keeps it
    from matplotlib.backends import backend_svg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _figure() -> tuple[Any, Any]:
    load_plotting()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.2))
    return fig, fig.add_subplot()


def _svg(fig: Any) -> bytes:
    out = io.BytesIO()
    fig.tight_layout()
    fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()
