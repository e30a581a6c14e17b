"""`python -m bench --review-form`: what labelling costs in the Prefect UI's Resume form on a large label set.

A scripted reviewer (selenium, headless Chromium) labels a 50-item batch of BANKING77 messages (77 labels) in the
real form twice: once as the form is now (each item's list starts with the champion's suggestions) and once with
`review.suggestions` 0, which is the old form (every item one list of all labels, A-Z; the old form had them in
config order). It counts its clicks and keystrokes per item and times the batch.

The reviewer does what a person at a mouse and keyboard would: open the item's select; click the answer if it is
in view without scrolling the list, else type the label's first letters (the list filters as one types) until the
answer is in view, then click it. Scrolling the form from one item to the next is not counted (the same in both
forms). A scripted browser measures the form's mechanics, not a person's reading or thinking time.

The browser helpers here are shared with the browser tests (tests/e2e/test_browser_*.py).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from hitl.review.forms import label_of

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "banking77"
PROBABILITIES = (0.55, 0.2, 0.1, 0.05, 0.03)  # the suggestions' shown probabilities, by rank
# The answer's rank among the five suggestions, per item in turn; 0: not among them (one item in ten, an
# assumption for the mix, not a measured hit rate: the per-kind figures let a reader recompute for another).
RANKS = (1, 2, 3, 4, 5, 1, 2, 3, 1, 0)
SECTION = 9  # its section of docs/benchmarks.md

# the popover's options, each with whether it is in view in its scrolling list (no scroll needed to click it)
_OPTIONS_JS = """
return [...document.querySelectorAll('[role=option]')].map(o => {
  const list = o.closest('[cmdk-list]') || o.parentElement, r = o.getBoundingClientRect(),
        l = list.getBoundingClientRect();
  return [o, o.textContent.trim(), r.height > 0 && r.top >= l.top - 1 && r.bottom <= l.bottom + 1];
});"""


# The UI's toast when the resume request itself failed (no reason from the server), as a 503 does.
TRANSIENT = "Failed to resume flow run"
# After Resume: "closed" once the dialog is gone (accepted), else the texts of error toasts not seen before
# (each marked seen), else null (still waiting).
_RESUME_OUTCOME_JS = """
const fresh = [...document.querySelectorAll('[data-sonner-toast][data-type=error]')].filter(t => !t.dataset.seen);
fresh.forEach(t => { t.dataset.seen = '1'; });
if (fresh.length) return fresh.map(t => t.textContent.trim());
const open = [...document.querySelectorAll('[role=dialog]')].some(d => d.textContent.includes('Resume Flow Run'));
return open ? null : 'closed';"""


def browser():
    """Headless Debian Chromium under chromedriver, both from PATH."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, (
        "The browser checks drive the Prefect UI in headless Chromium: install Debian's `chromium` and "
        "`chromium-driver` (`.ci/run` and `make test` do this where apt-get is available)."
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,1800"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


def _click(driver, xpath: str, timeout: float = 30):
    """Wait until the element at `xpath` is clickable, scroll it to the middle of the page, click it."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    el = WebDriverWait(driver, timeout).until(ec.element_to_be_clickable(("xpath", xpath)))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()
    return el


def open_run_page(driver, ui_url: str, run_id: str) -> None:
    """The run's page, with the run graph hidden (its canvas redraws without pause under software rendering)."""
    driver.get(f"{ui_url}/v2/runs/flow-run/{run_id}")
    time.sleep(3)
    driver.execute_script("document.querySelectorAll('canvas').forEach(c => c.style.display='none')")


def open_resume_dialog(driver) -> None:
    """Resume lives in the run page's ⋮ menu (Prefect 3.9's UI); three clicks."""
    from selenium.webdriver.common.by import By

    menus = [b for b in driver.find_elements(By.XPATH, "//button") if b.get_attribute("aria-haspopup")]
    assert menus, "the run page has no ⋮ menu: did the Prefect UI load?"
    menus[0].click()
    _click(driver, "//*[@role='menuitem'][contains(., 'Resume')]")
    _click(driver, "//*[contains(text(),'Resume Flow Run')]")


@dataclass
class Pick:
    """One item labelled: the choice the select shows afterwards, the options it offered on opening, and the
    reviewer's clicks and keystrokes."""

    title: str
    label: str
    choice: str
    offered: list[str]
    clicks: int
    keys: int
    seconds: float

    @property
    def interactions(self) -> int:
        return self.clicks + self.keys


@dataclass
class ScriptedReviewer:
    """A reviewer in the Prefect UI's Resume form who counts every click and keystroke."""

    driver: object
    labels: list[str]

    def open(self, ui_url: str, run_id: str) -> None:
        open_run_page(self.driver, ui_url, run_id)
        open_resume_dialog(self.driver)

    def _options(self) -> list[tuple[object, str, bool]]:
        """The open list's options once it has stopped changing (it re-filters after each keystroke)."""
        last = None
        for _ in range(50):
            now = self.driver.execute_script(_OPTIONS_JS)
            if last is not None and [o[1:] for o in now] == [o[1:] for o in last]:
                return now
            last = now
            time.sleep(0.05)
        return last

    def _in_view(self, label: str):
        return next((el for el, text, seen in self._options() if seen and label_of(text, self.labels) == label),
                    None)

    def _click_option(self, label: str, target) -> None:
        """Click the option; if the list moved under the pointer meanwhile, find it again (one click counted)."""
        from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException

        for _ in range(5):
            try:
                return target.click()
            except (ElementClickInterceptedException, StaleElementReferenceException):
                time.sleep(0.2)
                target = self._in_view(label) or target
        target.click()

    def pick(self, title: str, label: str) -> Pick:
        """Label the item whose select is titled `title` ("Item 3") with `label`: open, (type,) click."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        started = time.monotonic()
        trigger = WebDriverWait(self.driver, 30).until(
            lambda d: d.find_element(By.XPATH, f"//button[@aria-label='Select {title}']"))
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", trigger)
        trigger.click()
        clicks, keys = 1, 0
        WebDriverWait(self.driver, 10).until(lambda d: self._options())
        offered = [text for _, text, _ in self._options()]
        target = self._in_view(label)
        search = self.driver.switch_to.active_element  # the popover's "Search..." box has the focus
        for ch in label:
            if target is not None:
                break
            search.send_keys(ch)
            keys += 1
            target = self._in_view(label)
        assert target is not None, f"{title}: {label!r} not offered (options: {offered[:8]}...)"
        self._click_option(label, target)
        clicks += 1
        try:  # the select shows the choice once the popover has closed
            WebDriverWait(self.driver, 5).until(lambda _: label_of(trigger.text.strip(), self.labels) == label)
        except TimeoutException:
            raise AssertionError(f"{title}: the select shows {trigger.text!r}, not {label!r}") from None
        choice = trigger.text.strip()
        WebDriverWait(self.driver, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "[role=option]"))
        return Pick(title, label, choice, offered, clicks, keys, time.monotonic() - started)

    def label(self, labels: dict[str, str]) -> dict[str, Pick]:
        """Pick `labels[field]` for each item field ("item_01" is titled "Item 1"), in field order."""
        return {f: self.pick(f"Item {int(f.split('_')[1])}", labels[f]) for f in sorted(labels)}

    def sign_and_submit(self, name_title: str, name: str, tries: int = 4, pause_s: float = 5) -> list[str]:
        """Sign as `name`, click the dialog's Resume and wait for the UI's answer, as a person would: the dialog
        closes when the server accepted the input; on an error toast the dialog stays open with the form filled
        and the reviewer clicks Resume again `pause_s` later, up to `tries` clicks. Returns the error toasts seen
        (empty when the first click went through); fails, quoting them, when no click did or when the UI gave a
        reason other than TRANSIENT (the server refused the input: a person would have to change it).

        A SQLite-backed Prefect server can answer a resume 503 ("database is locked": its read-then-write
        transaction met another write), which the UI shows as "Failed to resume flow run"; nothing is stored
        then, and the next click is a new request (docs/operations.md, "Waiting for people holds no worker")."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.find_element(By.XPATH, f"//*[normalize-space()='{name_title}']/following::textarea[1]"
                                 ).send_keys(name)
        errors: list[str] = []
        self.driver.execute_script(_RESUME_OUTCOME_JS)  # marks the error toasts already shown as seen
        for _ in range(tries):
            self.driver.find_elements(By.XPATH, "//button[normalize-space()='Resume']")[-1].click()  # the dialog's
            # a page too busy to run the check within WebDriver's script timeout (30 s; seen on a loaded machine
            # right after the click) is looked at again, as a person waits for a busy page, up to 120 s in all
            new = WebDriverWait(self.driver, 120, ignored_exceptions=(TimeoutException,)).until(
                lambda d: d.execute_script(_RESUME_OUTCOME_JS))
            if new == "closed":
                return errors
            errors += new
            if set(new) != {TRANSIENT}:  # the server gave a reason (a refused input): clicking again cannot help
                raise AssertionError(f"the UI refused the Resume: {new}")
            time.sleep(pause_s)
        raise AssertionError(f"the UI refused the Resume {tries} times: {errors}")


def items(n: int, labels: list[str], prefix: str, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """n review items of BANKING77 test messages (policy picks, never blind) with five suggestions each, the
    answer at the rank RANKS gives in turn (0: not among them); and each trace's rank."""
    import numpy as np

    rng = np.random.default_rng(seed)
    test = pd.read_csv(DATA / "test.csv").sample(n=n, random_state=seed).reset_index(drop=True)
    rows, ranks = [], {}
    for i, (text, answer) in enumerate(zip(test["text"], test["category"], strict=True)):
        rank = RANKS[i % len(RANKS)]
        others = [str(x) for x in rng.choice([lab for lab in labels if lab != answer], size=5, replace=False)]
        shown = others[:5] if rank == 0 else [*others[:rank - 1], answer, *others[rank - 1:4]]
        trace_id = f"{prefix}{i:03d}"
        ranks[trace_id] = rank
        rows.append({"trace_id": trace_id, "input": text, "output": "", "context": None, "prediction": shown[0],
                     "confidence": PROBABILITIES[0], "model_version": "1", "channel": "app", "tier": "free",
                     "selection_reason": "uncertain", "evaluator_reasons": "", "priority": float(n - i),
                     "required_annotations": 1, "suggestions": list(zip(shown, PROBABILITIES, strict=True)),
                     "answer": answer})
    return pd.DataFrame(rows), ranks


def _config(tmp: Path, suggestions: int, ports: dict, n: int) -> Path:
    """A config on the BANKING77 label set, the stack on loopback `ports`, one batch of n items."""
    labels = yaml.safe_load((REPO / "configs" / "banking77.yaml").read_text())["labels"]
    raw = {"project": "review-form", "state_dir": str(tmp / "state"), "labels": labels, "cohorts": ["channel", "tier"],
           "stack": {"host": "127.0.0.1", **ports},
           "review": {"batch_size": n, "overlap_share": 0.0, "blind_share": 0.0, "suggestions": suggestions,
                      "poll_interval_s": 1, "timeout_s": 1800}}
    path = tmp / f"review-form-{suggestions}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def measure_batch(cfg, path: Path, batch: pd.DataFrame, driver, log: Callable[[str], None]) -> dict:
    """Enqueue `batch`, start a review-batch run with the config at `path`, label every item in the UI, check
    the store got every answer; the scripted reviewer's counts and times."""
    from hitl.ops import deploy, runs
    from hitl.review import prefect_api
    from hitl.review.forms import trace_ids_from_schema
    from hitl.review.store import ReviewStore

    store = ReviewStore(cfg.store_url)
    store.enqueue(batch.drop(columns="answer"), cfg.cohorts)
    started = deploy.trigger(cfg, path, "review-batch")
    runs.wait(started.id, 300, until_paused=True)
    run = next(r for r in prefect_api.paused_runs("ReviewForm") if r.id == str(started.id))
    answers = dict(zip(batch["trace_id"], batch["answer"], strict=True))
    fields = trace_ids_from_schema(run.schema)
    reviewer = ScriptedReviewer(driver, list(cfg.labels))
    t0 = time.monotonic()
    reviewer.open(cfg.prefect_ui_url, run.id)
    t1 = time.monotonic()
    picks = {fields[f]: p for f, p in reviewer.label({f: answers[t] for f, t in fields.items()}).items()}
    t2 = time.monotonic()
    refused = reviewer.sign_and_submit("Reviewer", "scripted")
    if refused:
        log(f"Resume clicked {len(refused) + 1} times; the UI said: {refused}")
    done = runs.wait(run.id, 300)
    assert done.state.is_completed(), done.state.message
    got = store.annotations().set_index("trace_id")["label"]
    assert all(got[t] == answers[t] for t in fields.values()), "the store did not get every answer"
    log(f"{len(fields)} items labelled in {t2 - t1:.1f} s")
    return {"picks": picks, "label_s": t2 - t1, "open_s": t1 - t0, "items": len(fields)}


def run(n: int = 50, log: Callable[[str], None] = print) -> dict:
    """Start a small stack, measure the same n-item batch in the old form and in the suggestions form."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from bench.auth_check import free_port
    from hitl.config import load_config
    from hitl.ops import deploy, stack

    out: dict = {"items": n, "labels": 0, "forms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ports = {"prefect_port": free_port(), "mlflow_port": free_port(), "worker_port": free_port()}
        paths = {"before": _config(Path(tmp), 0, ports, n), "after": _config(Path(tmp), 5, ports, n)}
        cfg = load_config(paths["after"])
        out["labels"] = len(cfg.labels)
        stack.up(cfg, console_print=log)
        driver = None
        try:
            with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
                deploy.apply(cfg, paths["after"])
                stack.start_worker(cfg, console_print=log)
                driver = browser()
                for form in ("before", "after"):
                    batch, ranks = items(n, list(cfg.labels), prefix=f"{form}-")
                    log(f"review form {form}: {n} items, {len(cfg.labels)} labels")
                    m = measure_batch(load_config(paths[form]), paths[form], batch, driver, log)
                    out["forms"][form] = summarise(m, ranks)
        except Exception:
            if driver is not None:  # where the reviewer stood, for whoever reads the traceback
                shot = Path(tempfile.gettempdir()) / "review-form-failed.png"
                driver.save_screenshot(str(shot))
                (shot.with_suffix(".html")).write_text(driver.page_source)
                log(f"failed: the browser's page is in {shot} and {shot.with_suffix('.html')}")
            raise
        finally:
            if driver is not None:
                driver.quit()
            stack.down(cfg)
    before, after = out["forms"]["before"], out["forms"]["after"]
    out["ratio_interactions"] = after["interactions_per_item"] / before["interactions_per_item"]
    out["ratio_seconds"] = after["label_s"] / before["label_s"]
    return out


def summarise(m: dict, ranks: dict[str, int]) -> dict:
    """Interactions per item (all, answer among the suggestions, not among them) and seconds for the batch."""
    picks: dict[str, Pick] = m["picks"]
    hit = [p.interactions for t, p in picks.items() if ranks[t]]
    miss = [p.interactions for t, p in picks.items() if not ranks[t]]
    every = hit + miss
    return {"interactions_per_item": sum(every) / len(every), "max_interactions": max(every),
            "interactions_among_suggestions": sum(hit) / len(hit), "max_among_suggestions": max(hit),
            "interactions_not_among": sum(miss) / len(miss) if miss else None,
            "label_s": m["label_s"], "per_item_s": m["label_s"] / m["items"], "open_s": m["open_s"],
            "offered": len(next(iter(picks.values())).offered)}


def to_markdown(r: dict) -> str:
    b, a = r["forms"]["before"], r["forms"]["after"]
    rows = [("old form: all labels A-Z, no suggestions", b), ("suggestions first (5), then all labels", a)]
    lines = ["| form | options per item | interactions per item (items whose answer is suggested / not) | most | "
             "seconds for the batch's items | per item |", "|---|---|---|---|---|---|"]
    for name, f in rows:
        lines.append(f"| {name} | {f['offered']} | {f['interactions_per_item']:.2f} "
                     f"({f['interactions_among_suggestions']:.2f} / {f['interactions_not_among']:.2f}) | "
                     f"{f['max_interactions']} | {f['label_s']:.1f} | {f['per_item_s']:.2f} |")
    return "\n".join(lines) + (f"\n\nAfter / before: {r['ratio_interactions']:.2f} x the interactions, "
                               f"{r['ratio_seconds']:.2f} x the seconds, on {r['items']} items and "
                               f"{r['labels']} labels.")


def section(r: dict, measured: str, seconds: float) -> str:
    """Section 9 of docs/benchmarks.md."""
    return f"""## 9. The review form in the browser (`python -m bench --review-form`, {measured})

A scripted reviewer (selenium, headless Chromium) labels the same {r['items']}-item batch of BANKING77 messages
({r['labels']} labels) in the Prefect UI's Resume form, first in the old form (`review.suggestions` 0: every item
one list of all labels A-Z, then "(none of these fits)"; the form before suggestions had the labels in config
order), then in the form with five suggestions first. It opens an item's select and clicks the answer when it is in
view without scrolling the list, else types the label's first letters (the list filters as it types) until the
answer is in view and clicks it. Clicks and keystrokes are counted per item; scrolling the form from item to item is
not (the same in both forms), nor the batch's own steps (open the run page, the ⋮ menu, Resume, the name, submit).
In one item in {len(RANKS) // RANKS.count(0)} the answer is not among the five suggestions (an assumed mix, not a
measured hit rate; the answer's rank among them cycles through {", ".join(map(str, RANKS[:-1]))}); both kinds are
shown apart. Every label reached the review store.

{to_markdown(r)}

A scripted browser measures the form's mechanics (how many clicks and keystrokes, how long the page takes to
answer them), not a person's reading and deciding time, which neither form removes. The interactions are the firm
figure. The seconds are WebDriver's on a shared 2-core machine and overstate the difference: after every keystroke
the script reads the filtered list back until it stops changing (a person glances at it), so each typed letter
costs it far more than it costs a person. The whole measurement took {seconds / 60:.1f} min.
"""
