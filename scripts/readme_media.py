"""Regenerate the README's pictures from a run folder, with the project's own code.

    text4d demo --ui none --steps 400                      # fit the sample headless -> recordings/sample-<time>/
    python scripts/readme_media.py recordings/sample-<time>/ docs/

writes ``docs/viewer.png`` (the web studio on that run, in headless Chromium),
``docs/fitted.gif`` (an orbit around the fitted animation) and ``docs/web_player.png`` (the
``web`` export of that run in headless Chromium, software WebGL).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from text4d.app.bench.splats import SOFTWARE_WEBGL_ARGS
from text4d.app.kinds import open_run
from viewer.viser_app import ViewerApp

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def screenshot(url: str, out: Path, chromium: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.get_by_text("iteration").first.wait_for(timeout=60_000)
        for text in ("Software WebGL", "Exported"):  # toasts about the headless browser itself
            close = page.locator(".mantine-Notification-root", has_text=text).locator("button")
            if close.count():
                close.first.click()
        time.sleep(8.0)  # frames, stats and plots refresh a few times (training keeps the picture moving)
        out.write_bytes(page.screenshot())
        browser.close()


def web_player_screenshot(index: Path, out: Path, chromium: str) -> None:
    """The exported web player (``index.html``) mid-clip, from its first view turned a little by an orbit drag."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=SOFTWARE_WEBGL_ARGS)
        page = browser.new_page(viewport={"width": 960, "height": 640})
        page.goto(index.as_uri())
        page.wait_for_function("window.text4dPlayer && text4dPlayer.ready", timeout=300_000)
        page.locator("#time").fill("500")
        page.mouse.move(480, 300)
        page.mouse.down()
        page.mouse.move(420, 290, steps=6)
        page.mouse.up()
        drawn = page.evaluate("text4dPlayer.renders")
        page.wait_for_function(f"text4dPlayer.renders >= {drawn + 6}", timeout=120_000)
        out.write_bytes(page.screenshot())
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    opened = open_run(args.run_dir, ["viewer.port=0"])
    session, cfg = opened.session, opened.cfg
    session.start()
    try:
        gif = session.export("gif").result()
        shutil.copyfile(gif, args.out_dir / "fitted.gif")
        web_player_screenshot(session.export("web").result() / "index.html", args.out_dir / "web_player.png", args.chromium)
        session.resume()  # show it optimising (a finished run says so instead)
        app = ViewerApp(session, cfg.viewer).start()
        try:
            screenshot(app.url, args.out_dir / "viewer.png", args.chromium)
        finally:
            app.stop()
    finally:
        session.stop()
    logging.info("wrote %s, %s and %s", args.out_dir / "viewer.png", args.out_dir / "fitted.gif", args.out_dir / "web_player.png")


if __name__ == "__main__":
    main()
