"""A reviewer resolves a paused review batch in the Prefect UI, in headless Chromium, as a person would:
open the run page, Resume, pick a label per item, name, submit. The labels land in the review store."""

from __future__ import annotations

import shutil
import time

import pytest
from e2e_helpers import api, finish, hitl, running_stack, start, truth, wait_paused

from hitl.review.forms import trace_ids_from_schema
from hitl.review.store import ReviewStore

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    yield from running_stack(
        tmp_path_factory.mktemp("browser"),
        project="browser",
        world={"seed": 3, "launch_per_intent": 6, "production_size": 60, "drift_channel": "voice",
               "drift_share": 0.3, "invalid_share": 0.0},
        model={"registered_name": "browser-intent", "max_length": 32},
        selection={"budget": 2, "random_share": 0.0, "strata": ["channel"], "seed": 0},
        review={"batch_size": 2, "overlap_share": 0.0, "poll_interval_s": 1, "timeout_s": 600},
        training={"epochs": 1, "batch_size": 16, "seed": 42, "max_steps": 2},
    )


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, (
        "This test drives the Prefect UI in headless Chromium: install Debian's `chromium` and "
        "`chromium-driver` (`.ci/run` and `make test` do this where apt-get is available)."
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,1800"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _click_text(driver, xpath: str, timeout: float = 30):
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    el = WebDriverWait(driver, timeout).until(ec.element_to_be_clickable(("xpath", xpath)))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()
    return el


def _open_resume_dialog(driver) -> None:
    """Resume lives in the run page's ⋮ menu (Prefect 3.9's UI)."""
    from selenium.webdriver.common.by import By

    menus = [b for b in driver.find_elements(By.XPATH, "//button") if b.get_attribute("aria-haspopup")]
    assert menus, "the run page has no ⋮ menu: did the Prefect UI load?"
    menus[0].click()
    _click_text(driver, "//*[@role='menuitem'][contains(., 'Resume')]")
    _click_text(driver, "//*[contains(text(),'Resume Flow Run')]")


def _resume_in_ui(driver, cfg, run, labels: dict[str, str], name_title: str, name: str, shot) -> None:
    """Open the paused run's page, Resume, pick `labels[field]` per item, sign as `name`, submit."""
    from selenium.webdriver.common.by import By

    driver.get(f"{cfg.prefect_ui_url}/v2/runs/flow-run/{run.id}")
    # the run graph canvas redraws without pause under software rendering: hide it
    time.sleep(3)
    driver.execute_script("document.querySelectorAll('canvas').forEach(c => c.style.display='none')")
    _open_resume_dialog(driver)
    for field, label in labels.items():  # field "item_01" has the title "Item 1"
        title = f"Item {int(field.split('_')[1])}"
        _click_text(driver, f"//*[normalize-space()='{title}']/following::*[normalize-space()='Select'][1]")
        _click_text(driver, f"//*[@role='option'][normalize-space()='{label}']")
    driver.find_element(By.XPATH, f"//*[normalize-space()='{name_title}']/following::textarea[1]").send_keys(name)
    driver.save_screenshot(str(shot))
    driver.find_elements(By.XPATH, "//button[normalize-space()='Resume']")[-1].click()  # the dialog's


def test_reviewer_resumes_a_suspended_batch_in_the_prefect_ui(small, tmp_path):
    """The review run comes from its deployment on the worker and is suspended (no process) when the reviewer
    resumes it in the UI; the worker then runs it to the end."""
    from hitl.ops import deploy, runs

    cfg, path = small
    hitl(path, "bootstrap")
    hitl(path, "produce")
    hitl(path, "sample")
    driver = _browser()
    try:
        with api(cfg):
            started = deploy.trigger(cfg, path, "review-batch")
        run = wait_paused(cfg, "ReviewForm")
        assert run.id == str(started.id)
        with api(cfg):
            assert runs.flow_runs(["review-batch/review-batch"], states=("PAUSED",))[0].state_name == "Suspended"
        known = truth(cfg)
        fields = trace_ids_from_schema(run.schema)
        _resume_in_ui(driver, cfg, run, {f: known[t] for f, t in fields.items()}, "Reviewer", "ui-reviewer",
                      tmp_path / "filled.png")
        with api(cfg):
            done = runs.wait(run.id, 300)
        assert done.state.is_completed(), done.state.message
    finally:
        driver.save_screenshot(str(tmp_path / "last.png"))
        driver.quit()
    ann = ReviewStore(cfg.store_url).annotations().set_index("trace_id")
    assert len(ann) == len(fields) == 2 and set(ann["reviewer"]) == {"ui-reviewer"}
    assert all(ann.loc[t, "label"] == known[t] for t in fields.values())


def test_adjudicator_settles_a_dispute_in_the_prefect_ui(small, tmp_path):
    """Two reviewers disagreed; the adjudicator decides in the Prefect UI form and that label holds."""
    from helpers_domain import COHORTS, review_items

    cfg, path = small
    store = ReviewStore(cfg.store_url)
    store.enqueue(review_items(2, prefix="dispute-", required=2), COHORTS)
    for who, label in (("ann", cfg.labels[0]), ("bob", cfg.labels[1])):
        batch = store.take_batch(2)
        store.submit(batch.id, who, {it["trace_id"]: (label, None) for it in batch.items}, cfg.labels)
    assert len(store.disputed()) == 2
    decided = cfg.labels[2]
    driver = _browser()
    proc = start(path, "adjudicate")
    try:
        run = wait_paused(cfg, "AdjudicationForm")
        fields = trace_ids_from_schema(run.schema)
        assert "ann said" in run.fields["item_01"]["description"]  # both earlier labels are shown
        _resume_in_ui(driver, cfg, run, dict.fromkeys(fields, decided), "Adjudicator", "ui-lead",
                      tmp_path / "adjudication-filled.png")
        out = finish(proc)  # 300 s: a loaded 2-core machine (xdist runs two e2e modules at once)
        assert proc.returncode == 0, out[-3000:]
    finally:
        driver.save_screenshot(str(tmp_path / "adjudication.png"))
        driver.quit()
        proc.kill() if proc.poll() is None else None
    res = store.resolutions()
    assert set(res["trace_id"]) == set(fields.values()) and set(res["reviewer"]) == {"ui-lead"}
    assert set(res["label"]) == {decided} and set(res["kind"]) == {"adjudication"}
    assert not store.disputed() and len(store.annotations().query("reviewer in ['ann', 'bob']")) == 4
