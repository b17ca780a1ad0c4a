"""End to end: `workbench app`'s server on a free localhost port, every page opened in headless
Chromium (Selenium + Debian's chromium-driver), charts awaited, a screenshot saved per page
(into `$WORKBENCH_SCREENSHOTS` when set, else the test's tmp_path), and any exception text on
a page fails the test. Skipped only when no Chromium is installed (`.ci/run` installs it)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from app.runs import PAGES
from app.serve import free_port, start

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                               "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--window-size=1600,1300")
# url path of each page (st.Page names it after the file) -> charts it must draw on `tiny`
# (a page's URL first: the router must run for it too, not the page's file alone)
CHARTS = {"attention": 2, "": 1, "induction": 3, "probes": 2, "beliefs": 1, "icl": 3,
          "activations": 1, "logit_lens": 1, "scaling": 3}
ERROR_TEXT = ("Traceback", "Error:", "Exception:")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no chromium/chromedriver binary: `apt-get install chromium chromium-driver` "
           "(.ci/run does) to run the browser test")


def _wait_healthy(url: str, proc: object, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:  # type: ignore[attr-defined]
            raise RuntimeError(f"the dashboard exited with status {proc.returncode}")  # type: ignore[attr-defined]
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the dashboard at {url} was not up after {timeout:.0f} s")


@pytest.fixture
def server(app_runs: Path):
    proc, url = start(app_runs, free_port(), quiet=True)
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _settled(driver, n_charts: int) -> bool:
    """The page drew its charts and Streamlit has stopped running the script."""
    from selenium.webdriver.common.by import By

    charts = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stPlotlyChart'] "
                                                   "div.js-plotly-plot")
    drawn = [c for c in charts if c.find_elements(By.CSS_SELECTOR, "svg.main-svg")]
    running = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']")
    return len(drawn) >= n_charts and not running


def test_every_page_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert sorted(p[0] for p in PAGES) == sorted(
        f"pages/{name or 'models'}.py" for name in CHARTS)
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    for path, n_charts in CHARTS.items():
        browser.get(f"{server}/{path}")
        WebDriverWait(browser, 120, poll_frequency=0.5).until(
            lambda d, n=n_charts: _settled(d, n),
            message=f"page /{path} did not draw {n_charts} charts within 120 s")
        time.sleep(1.0)  # plotly finishes laying out
        name = path or "models"
        browser.save_screenshot(str(shots / f"{name}.png"))
        errors = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException'], "
                                                        "[data-testid='stAlertContentError']")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert not errors, f"/{path}: {[e.text for e in errors]}"
        assert not [t for t in ERROR_TEXT if t in body], f"/{path} shows an error:\n{body}"
        sidebar = browser.find_element(By.CSS_SELECTOR, "[data-testid='stSidebar']").text
        assert "runs folder" in sidebar and "checkpoint step" in sidebar, sidebar
        assert (shots / f"{name}.png").stat().st_size > 10_000
