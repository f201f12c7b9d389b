"""The upload page at GET /, driven in headless Chromium against a running ``visionops serve``.

    .venv/bin/pytest tests/serving/test_upload_page.py

Needs the Debian packages chromium and chromium-driver, which ``make test`` installs
(scripts/install-system-packages.sh). Selenium is given both paths, so it downloads nothing.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
#: Long enough for a loaded CI machine's first request (model warm-up included).
TIMEOUT_S = 20
#: A mark, not a skip in the fixture, so that no model is trained for a test that cannot run.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver on PATH: run scripts/install-system-packages.sh",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def upload(driver, base_url: str, path: Path, result_id: str) -> str:
    """Open the page, choose ``path`` in its file input and return ``#result_id``'s text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/")
    driver.find_element(By.ID, "file").send_keys(str(path))
    return WebDriverWait(driver, TIMEOUT_S).until(
        lambda d: d.find_element(By.ID, result_id).text.strip(),
        message=f"#{result_id} stayed empty for {TIMEOUT_S} s after uploading {path.name}",
    )


def predict_directly(base_url: str, filename: str, data: bytes) -> httpx.Response:
    """The server's own answer to an upload, to compare the page with."""
    return httpx.post(
        f"{base_url}/v1/predict", files={"file": (filename, data, "image/png")}, timeout=TIMEOUT_S
    )


def assert_preview_painted(driver, screenshot: Image.Image, png: bytes) -> None:
    """The preview's part of the screenshot has the uploaded image's mean colour: it was drawn."""
    box = driver.execute_script(
        "const r = document.getElementById('preview').getBoundingClientRect();"
        "const s = window.devicePixelRatio;"
        "return [r.left * s, r.top * s, r.right * s, r.bottom * s];"
    )
    # Inset past the rounded corners; clipped to what the window shows.
    left, top, right, bottom = (round(v) for v in box)
    painted = screenshot.crop((left + 8, top + 8, right - 8, min(bottom, screenshot.height) - 8))
    actual = ImageStat.Stat(painted).mean
    expected = ImageStat.Stat(Image.open(io.BytesIO(png)).convert("RGB")).mean
    assert all(abs(a - e) < 15 for a, e in zip(actual, expected, strict=True)), (actual, expected)


@pytest.mark.integration
@needs_chromium
def test_upload_shows_the_top_prediction_and_the_image(
    browser, serve_url: str, class_images: dict[str, bytes], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    first = next(iter(class_images.items()))
    version = predict_directly(serve_url, f"{first[0]}.png", first[1]).json()["model"]["version"]
    for label, png in class_images.items():
        path = tmp_path / f"{label}.png"
        path.write_bytes(png)

        assert upload(browser, serve_url, path, "top-label") == label
        assert f"version {version}" in browser.find_element(By.ID, "model").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#predictions li")
        assert 1 <= len(rows) <= 5
        assert label in rows[0].text and rows[0].text.endswith("%")
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.execute_script(
            "const img = document.getElementById('preview');"
            "return img.complete && img.naturalWidth > 0;"
        ), f"the preview of {path.name} did not load"

        screenshot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
        screenshot.save(tmp_path / f"{label}-screenshot.png")
        # Text, bars and the image: a blank or unstyled page has a handful of colours.
        assert len(screenshot.getcolors(maxcolors=1 << 24)) > 100
        assert_preview_painted(browser, screenshot, png)


@pytest.mark.integration
@needs_chromium
def test_upload_of_a_non_image_shows_the_servers_message(
    browser, serve_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    path = tmp_path / "notes.png"
    path.write_bytes(b"these are notes, not a PNG image\n" * 4)
    answer = predict_directly(serve_url, path.name, path.read_bytes())
    assert answer.status_code == 415

    assert upload(browser, serve_url, path, "error") == answer.json()["detail"]
    assert browser.find_element(By.ID, "top-label").text == ""
    assert browser.find_elements(By.CSS_SELECTOR, "#predictions li") == []


def test_the_page_is_self_contained() -> None:
    """One file: the server answers GET / with it and serves nothing else beside it, and a
    machine behind a firewall still gets a working page (no CDN, web font or remote script)."""
    page = (resources.files("visionops.serving") / "static" / "index.html").read_text("utf-8")
    assert re.findall(r"(?:https?:)?//[\w-]+\.[\w.-]+", page) == []
    assert re.findall(r"<script[^>]*\ssrc=|<link[^>]*stylesheet|@import|url\(", page) == []
