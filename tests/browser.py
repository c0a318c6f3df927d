"""Headless Chromium for the page tests: Debian's ``chromium``, driven by Playwright.

``.ci/run`` installs the package; without it these tests fail and say how to get it (a
skipped browser test would let a broken page pass).
"""

import shutil
from contextlib import contextmanager

import numpy as np

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: apt-get install chromium (.ci/run does)"
    return found


@contextmanager
def page(viewport=(1200, 1000)):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable(), headless=True,
                                             args=ARGS)
        try:
            yield browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        finally:
            browser.close()


def assert_not_blank(png_file) -> None:
    """A screenshot that shows something: many colours, not one flat page."""
    from PIL import Image

    pixels = np.asarray(Image.open(png_file).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20, f"blank screenshot (std {pixels.std():.1f})"
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours in the screenshot"
