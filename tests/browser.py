"""Headless Chromium for the HTML report tests: Debian's `chromium`, driven by Playwright.

The browser is the system's (never `playwright install`). Where it or Playwright is missing the
browser tests are skipped, except in CI (CI=true), where that is a failure: `.ci/run` installs
chromium. Every page is opened with the network blocked: any request other than the report file
itself is aborted and recorded, so a test can assert that none left the page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ARTIFACTS", "OpenedPage", "chromium_path", "open_report"]

# Where test runs leave what a person may want to look at (screenshots); ignored by git.
ARTIFACTS = Path(
    os.environ.get("FANOUT_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)


def chromium_path() -> str:
    """The system's Chromium; skip (fail in CI) when it or Playwright is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    if found is None:
        reason = "Debian's chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401, PLC0415 - only the browser tests need it
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI the browser tests must run: {reason}")
        pytest.skip(reason)
    assert found is not None
    return found


@dataclass
class OpenedPage:
    """A report page open in headless Chromium, with what it tried to fetch."""

    page: Any  # playwright.sync_api.Page
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    blocked: list[str] = field(default_factory=list)  # those aborted (anything not the file)
    dialogs: list[str] = field(default_factory=list)  # alert()s: none may happen
    errors: list[str] = field(default_factory=list)  # uncaught script errors


@contextmanager
def open_report(path: Path, *, width: int = 1400, height: int = 1000) -> Iterator[OpenedPage]:
    """Open the report file in headless Chromium with every network request blocked."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    url = path.resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            opened = OpenedPage(page=None)

            def route(route: Any) -> None:
                opened.requests.append(route.request.url)
                if route.request.url == url:
                    route.continue_()
                else:
                    opened.blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", route)
            page = context.new_page()

            def dialog(d: Any) -> None:
                opened.dialogs.append(d.message)
                d.dismiss()

            def error(e: Any) -> None:
                opened.errors.append(str(e))

            page.on("dialog", dialog)
            page.on("pageerror", error)
            opened.page = page
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
            yield opened
        finally:
            browser.close()
