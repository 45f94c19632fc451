"""Browser tests' Chromium: skip the module where Playwright or Chromium is missing, launch it otherwise.

The binary and flags are the product's own (:mod:`text4d.app.headless_browser`), so tests, the
benchmarks and the README pictures run the same browser the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from text4d.app.headless_browser import find_chromium, launch


def require_browser() -> None:
    """Skip the calling test module unless Playwright and Chromium are installed (``scripts/test.sh`` installs both)."""
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (bash scripts/test.sh installs it)")
    if find_chromium() is None:
        pytest.skip("Debian chromium not installed (bash scripts/test.sh installs it)", allow_module_level=True)


def chromium(args: list[str]) -> Iterator[object]:
    """Body of a module-scoped ``browser`` fixture: one Chromium with ``args`` for the module's tests."""
    with launch(args, "the browser tests") as browser:
        yield browser
