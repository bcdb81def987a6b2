"""Test support for the browser tests: Debian's headless Chromium driven by Playwright.

Playwright's own browser download is not used (nor reachable here): Chromium comes from the
system (``apt-get install chromium``, as ``.ci/run`` does) and each browser starts with a fresh
user-data directory. Missing Chromium or Playwright skips the test, or fails it when
``LIQMON_REQUIRE_BROWSER`` is set (as in CI).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Playwright

CHROMIUM = os.environ.get("LIQMON_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Without the background-networking flags Chromium reaches for Google's services, which a
closed network refuses (slowly)."""
VIEWPORT = {"width": 1600, "height": 1000}


def require_browser() -> None:
    """Skip (or fail, with ``LIQMON_REQUIRE_BROWSER``) when Chromium or Playwright is missing."""
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is None and not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing = f"{CHROMIUM} is not installed (apt-get install chromium)"
    if missing is not None:
        if os.environ.get("LIQMON_REQUIRE_BROWSER"):
            pytest.fail(f"{missing}, and LIQMON_REQUIRE_BROWSER is set")
        pytest.skip(missing)


@contextmanager
def chromium(driver: Playwright | None = None, **context: Any) -> Iterator[BrowserContext]:
    """A fresh headless Chromium (its own user-data directory), as a Playwright context.
    ``driver``: a running Playwright (its sync API cannot be started twice in one thread)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as stack:
        if driver is None:
            driver = stack.enter_context(sync_playwright())
        home = stack.enter_context(tempfile.TemporaryDirectory(prefix="liqmon-chromium-"))
        browser = driver.chromium.launch_persistent_context(
            home,
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport=VIEWPORT,  # type: ignore[arg-type]
            **context,
        )
        try:
            yield browser
        finally:
            browser.close()
