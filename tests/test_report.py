"""The job's page (``report.html``), the index of a folder of jobs and ``status --json``: written by
a real render of the demo job and by ``deforum-ray status --html``, checked against the store's own
facts and opened in headless Chromium (skipped, with the reason, where none is installed)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import render_here
from deforum_ray.cli import main
from deforum_ray.store import RenderStore

REPO = Path(__file__).resolve().parents[1]
DEMO = [str(REPO / "jobs" / "demo.yaml"), "clips.0.num_frames=13", "clips.1.num_frames=4", "post.contact_sheet_every=2"]


class Links(HTMLParser):
    """Every picture and video a page shows, and every link it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "video") and "src" in attrs:
            self.sources.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def links_of(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text())
    return parser


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, ray_cluster) -> Path:
    """The demo job rendered into an output folder, and a copy of it beside it as a second job."""
    out = tmp_path_factory.mktemp("report") / "renders"
    assert render_here(None, *DEMO, f"output.uri={out}")[0] == 0
    shutil.copytree(job_dir(out), out / "farm-copy")
    return out


def job_dir(out: Path, name: str = "demo") -> Path:
    (found,) = out.glob(f"{name}-*")
    return found


def status_json(capsys, where: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["status", str(where), "--json", *extra]) in (0, 1)
    return json.loads(capsys.readouterr().out)


def test_a_render_writes_its_page_with_every_part_in_the_job_folder(jobs):
    folder = job_dir(jobs)
    page = folder / "report.html"
    text = page.read_text()
    found = links_of(page)
    assert {"demo.mp4", "demo-lighthouse.mp4", "demo-harbour.mp4", "demo-lighthouse-sheet.png",
            "demo-harbour-sheet.png", "report/frames-per-second.svg", "report/seconds-per-frame.svg",
            "segments/lighthouse/0/frames/000012.png", "segments/harbour/0/frames/000003.png"} <= set(found.sources)
    for src in found.sources:  # relative, and there
        assert not src.startswith(("/", "http")) and (folder / src).is_file(), src
    assert "<script" not in text and "http://" not in text and "https://" not in text  # nothing from elsewhere
    assert "complete</span>: 17 frames" in text
    assert "chains (each is sequential" in text  # the plan
    assert "a lighthouse at dusk, oil painting" in text  # the spec
    assert "None recorded." in text  # no problem


def test_the_demos_harbour_keeps_its_init_image_and_the_camera_moves_it(jobs):
    """The demo shows motion a person can see: the harbour clip starts from a picture (found next
    to the job file) and its frames are that picture zoomed in and turned counter-clockwise."""
    from PIL import Image

    frames = job_dir(jobs) / "segments"
    grey = lambda path: Image.open(path).convert("L")  # noqa: E731
    centre = lambda image: np.asarray(image, float)[32:96, 32:96].ravel()  # noqa: E731 - corners turn away
    likeness = lambda a, b: float(np.corrcoef(centre(a), centre(b))[0, 1])  # noqa: E731
    init = grey(REPO / "jobs" / "demo-harbour.png")
    first, last = (grey(frames / "harbour" / "0" / "frames" / f"{i:06d}.png") for i in (0, 3))
    assert likeness(first, init) > 0.5 > abs(likeness(grey(frames / "lighthouse" / "0" / "frames" / "000000.png"), init))

    def camera(image, frames: int, turn: float, zoom: float):  # the demo's zoom and angle, in pixels
        size = round(128 * zoom**frames)
        edge = (size - 128) // 2
        return image.rotate(turn * frames, Image.BICUBIC).resize((size, size), Image.BICUBIC).crop(
            (edge, edge, edge + 128, edge + 128))

    moved = likeness(last, camera(first, 3, 1.0, 1.02))
    assert moved > 0.97 and moved > max(likeness(last, first), likeness(last, camera(first, 3, -1.0, 1.02)),
                                        likeness(last, camera(first, 3, 1.0, 1 / 1.02)))


def test_the_demos_init_image_is_what_its_script_draws():
    from importlib.util import module_from_spec, spec_from_file_location

    from PIL import Image

    loaded = spec_from_file_location("draw_demo_harbour", REPO / "jobs" / "draw-demo-harbour.py")
    script = module_from_spec(loaded)
    loaded.loader.exec_module(script)
    shipped = np.asarray(Image.open(REPO / "jobs" / "demo-harbour.png").convert("RGB"))
    assert np.array_equal(np.asarray(script.draw()), shipped)


def test_status_json_carries_the_stores_facts(jobs, capsys):
    folder = job_dir(jobs)
    (record,) = status_json(capsys, folder)["jobs"]
    store = RenderStore(str(folder))
    rows = store.read_runlog()
    pngs = sorted(folder.glob("segments/*/*/frames/*.png.ok"))
    assert record["complete"] and record["frames_done"] == record["frames"] == len(pngs) == 17
    assert record["eta_s"] is None
    chains = {c["label"]: c for c in record["chains"]}
    assert chains.keys() == {"lighthouse/0", "harbour/0"}
    for label, chain in chains.items():
        clip = label.split("/")[0]
        frames = sorted(int(p.name[:6]) for p in (folder / "segments" / clip / "0" / "frames").glob("*.png.ok"))
        assert chain["frames_done"] == len(frames) and chain["latest"] == f"segments/{label}/frames/{frames[-1]:06d}.png"
        assert chain["workers"] == sorted({r["worker"] for r in rows if r["clip"] == clip})
    assert sum(r["frames"] for r in record["runs"]) == sum(1 for r in rows if r["segment"] >= 0) == 17
    assert record["problems"] == store.events() == []
    both = status_json(capsys, jobs)["jobs"]
    assert [r["url"] for r in both] == [str(folder), str(jobs / "farm-copy")]


def test_status_html_of_an_unfinished_job_shows_progress_time_left_and_the_index(jobs, tmp_path, capsys):
    """A job whose last frames and video are gone (as while it renders): its page shows the frames
    so far, the latest frame of each chain and the time left; the folder's index lists both jobs."""
    out = tmp_path / "renders"
    shutil.copytree(jobs, out)
    folder = job_dir(out)
    for stale in [*folder.glob("*.mp4*"), *folder.glob("final.json*"), *folder.glob("segments/lighthouse/0/DONE*"),
                  *folder.glob("segments/lighthouse/0/frames/00001[0-2].png*")]:
        stale.unlink()
    (record,) = status_json(capsys, folder)["jobs"]
    assert not record["complete"] and record["frames_done"] == 14 and record["eta_s"] > 0
    assert {c["label"]: c["latest"] for c in record["chains"]}["lighthouse/0"] == "segments/lighthouse/0/frames/000009.png"
    capsys.readouterr()
    assert main(["status", str(out), "--html"]) == 0
    text = (folder / "report.html").read_text()
    assert "14/17</span> frames rendered, about" in text and "left at the last minute's rate" in text
    assert "segments/lighthouse/0/frames/000009.png" in links_of(folder / "report.html").sources
    index = links_of(out / "index.html")
    assert index.links[:2] == [f"{folder.name}/report.html", "farm-copy/report.html"]
    for src in index.sources + index.links:
        assert (out / src).is_file(), src


def test_a_corrupt_frame_shows_on_its_page(jobs, tmp_path, capsys):
    out = tmp_path / "renders"
    shutil.copytree(jobs, out)
    folder = job_dir(out)
    frame = folder / "segments" / "harbour" / "0" / "frames" / "000002.png"
    frame.write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["status", str(folder), "--verify", "--html"]) == 1  # damaged: un-finished, and on the page
    text = (folder / "report.html").read_text()
    assert "1 problem(s)" in text
    assert "segments/harbour/0/frames/000002.png" in text and "size 9 !=" in text
    (record,) = status_json(capsys, folder)["jobs"]  # the same problem, for scripts
    assert [(p["kind"], p["object"]) for p in record["problems"]] == [("corrupt", "segments/harbour/0/frames/000002.png")]
    assert not record["complete"] and record["frames_done"] == 16  # un-vouched: the next render repairs it


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium installed (.ci/run installs Debian's chromium; apt-get install chromium)")


def test_the_pages_load_in_headless_chromium_with_nothing_broken(jobs):
    """No console error, no failed request; the videos report their duration and every picture
    its width, on the job's page and on the index."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    executable = chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            for page_file in (job_dir(jobs) / "report.html", jobs / "index.html"):
                if not page_file.exists():
                    assert main(["status", str(jobs), "--html"]) == 0
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.goto(page_file.as_uri(), wait_until="load")
                page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 1)",
                                       timeout=20000)
                durations = page.evaluate("[...document.querySelectorAll('video')].map(v => v.duration)")
                widths = page.evaluate("[...document.querySelectorAll('img')].map(i => [i.getAttribute('src'), "
                                       "i.complete ? i.naturalWidth : 0])")
                assert problems == [], problems
                assert all(d > 0 for d in durations), durations
                assert widths and all(w > 0 for _, w in widths), widths
                if page_file.name == "report.html":
                    assert len(durations) == 3 and durations[0] == pytest.approx((13 + 4) / 12, abs=0.1)
                page.close()
        finally:
            browser.close()
