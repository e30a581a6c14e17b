"""The report's first screen as a manager sees it: the rendered HTML in headless Chromium at 1280x800 holds the
sentence, the change chart and the gate decision. The screenshot stays in the test's tmp_path (its path is
printed)."""

from __future__ import annotations

import os
import shutil

import pytest
from test_report_summary import demo_like_ctx

from hitl.evaluation import report

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WIDTH, HEIGHT = 1280, 800


@pytest.fixture
def driver():
    if not (CHROMIUM and CHROMEDRIVER):
        reason = ("the first-screen test renders the report in headless Chromium: install Debian's `chromium` and "
                  "`chromium-driver` (`make browser`)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", f"--window-size={WIDTH},{HEIGHT}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # the window size includes the browser's own frame: make the page's viewport itself 1280x800
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield d
    finally:
        d.quit()


@pytest.mark.parametrize("regions", [0, 30], ids=["demo-like", "40-cohort-rows"])
def test_first_screen_holds_the_sentence_the_change_chart_and_the_gate(tmp_path, driver, regions):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ctx = demo_like_ctx(tmp_path, "awaiting approval", regions)
    _, html = report.write(ctx, tmp_path / "reports", "first-screen")
    driver.get(html.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const i = document.getElementById('change-chart'); return i && i.complete && i.naturalHeight > 0"))
    viewport = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    shot = tmp_path / "report-first-screen-1280x800.png"
    driver.save_screenshot(str(shot))
    print(f"first-screen screenshot: {shot} (viewport {viewport[0]}x{viewport[1]})")
    assert shot.stat().st_size > 0 and viewport == [WIDTH, HEIGHT]
    for element_id in ("headline", "change-chart", "decision"):
        el = driver.find_element(By.ID, element_id)
        assert el.is_displayed() and el.size["height"] > 0, element_id
        assert el.location["y"] + el.size["height"] <= HEIGHT, (element_id, el.location, el.size)
    assert driver.find_element(By.ID, "headline").text == ctx.summary().sentence
    assert driver.find_element(By.ID, "decision").text.startswith(f"Gate: {ctx.gate.outcome} · Decision:")
