"""Headless Chromium, in one place: which binary and which flags the benchmarks, README pictures and
browser tests launch.

Debian's Chromium driven by Playwright (both installed by ``scripts/test.sh``; Playwright is in the
``dev`` extra). Two flag sets: the web studio draws with plain canvases, so ``STUDIO_ARGS`` turns the
GPU off; the exported web player needs WebGL 2, which headless Chromium without a GPU only gives
through SwiftShader (software rendering) and, in newer versions, only when asked for.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from text4d.errors import Text4DError

if TYPE_CHECKING:
    from playwright.sync_api import Browser

_COMMON_ARGS = ["--no-sandbox", "--headless", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
STUDIO_ARGS = [*_COMMON_ARGS, "--disable-gpu"]
SOFTWARE_WEBGL_ARGS = [*_COMMON_ARGS, "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def find_chromium() -> str | None:
    """``$TEXT4D_CHROMIUM``, else the ``chromium`` on the PATH (Debian's), else None."""
    return os.environ.get("TEXT4D_CHROMIUM") or shutil.which("chromium")


@contextmanager
def launch(args: list[str], purpose: str) -> Iterator[Browser]:
    """A headless Chromium for ``purpose`` (said in the one-line error when Chromium or Playwright is missing)."""
    executable = find_chromium()
    if executable is None:
        raise Text4DError(f"{purpose} needs Chromium: apt-get install chromium (or set TEXT4D_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        raise Text4DError(f"{purpose} needs Playwright: pip install -e '.[dev]'") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            yield browser
        finally:
            browser.close()
