"""Retakes docs/report.png, the README's picture of a job's page, from a rendered demo job:

    deforum-ray render jobs/demo.yaml output.uri=/tmp/shot cluster.num_workers=2
    python docs/take-screenshot.py /tmp/shot/demo-*/report.html

Needs Playwright and a Chromium (Debian's at /usr/bin/chromium, as .ci/run installs). Each video
is shown a moment in (the whole job's in its second clip); 96 colours keep the PNG near 100 KB.
"""

import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

SEEK_S = [3.2, 1.0, 0.6]  # the whole job, lighthouse, harbour


def main(page: str, chromium: str = "/usr/bin/chromium") -> None:
    shot = Path(__file__).with_name("report.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1000, "height": 1500})
        tab.goto(Path(page).resolve().as_uri())
        tab.evaluate("""async (at) => {
          const videos = [...document.querySelectorAll('video')];
          await Promise.all(videos.map((v, i) => new Promise(done => {
            v.preload = 'auto'; v.addEventListener('seeked', done, {once: true}); v.currentTime = at[i] ?? 1.0;
          })));
        }""", SEEK_S)
        tab.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 3 && !v.seeking)")
        tab.wait_for_timeout(3000)  # the controls fade in after a seek
        tab.screenshot(path=str(shot))
        browser.close()
    Image.open(shot).convert("RGB").quantize(96).save(shot, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
