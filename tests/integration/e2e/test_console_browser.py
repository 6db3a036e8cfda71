"""The console in a real browser (headless Chromium, driven by Selenium) on the loop itself.

One embedded stack and one run of the demo loop, shared by every test of the
module: data lands, dataset v1, a champion, drift, a dataset built on it, a
second champion. Each test opens a page as a person would, asserts on what
the page shows, and leaves a screenshot in its temporary folder.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loop_stack import (
    assert_final_state,
    loop_policies,
    read_events,
    rebuild_every_version,
    start_stack,
    unbuilt_objects,
    wait_until_settled,
)
from rich.console import Console
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from streamml.demo import DemoPlan, Timeline, run_demo
from streamml.events import DatasetReady, DriftDetected, ModelPromoted, ModelTrained
from streamml.kafka import EventProducer
from streamml.registry.champion import promote_by_hand
from streamml.settings import ServiceSettings
from streamml.stack.control import down
from streamml.store import ObjectStore

# One loop (up to PLAN.timeout_s) is paid by the first test of the module.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
# timeout_s is a bound, not a target: on a host busy with other work the loop is slow.
PLAN = DemoPlan(rate=3000, first_records=12_000, drift_records=12_000, timeout_s=900)
# The example policy's latency budget (20 ms at p95) is for a quiet machine; these tests
# look at the console, so a host busy with other tests must not keep the loop from a champion.
LATENCY_BUDGET_MS = 1000
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The network is closed: nothing may try to reach it, and a fresh profile per run.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1600")


@dataclass(frozen=True)
class Loop:
    base: str
    settings: ServiceSettings
    state_dir: Path
    timeline: Timeline  # what the demo saw while it ran
    events: list  # every event of the settled loop, each topic in order

    def promotions(self) -> list[ModelPromoted]:
        return [event for event in self.events if isinstance(event, ModelPromoted)]

    def first(self, kind: type, where=lambda e: True):
        return next(event for event in self.events if isinstance(event, kind) and where(event))


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("console-loop")
    policies = loop_policies(root / "policies", LATENCY_BUDGET_MS)
    config, settings = start_stack(root / "stack", ephemeral=True, policies=policies, timeout=180)
    try:
        with open(root / "demo.log", "w") as log:
            timeline = run_demo(settings, PLAN, Console(file=log))
        # The demo ends at the second champion while the rest of the drifted data may still make
        # versions: the pages are looked at once the loop has nothing left to do.
        # Rows left over from the drifted burst are built on prep's staleness rule, with no group behind.
        store = ObjectStore.connect(settings.s3)
        deadline = time.monotonic() + 600
        while (unbuilt := unbuilt_objects(store, "transactions")) and time.monotonic() < deadline:
            time.sleep(5)
        assert not unbuilt, f"landed objects in no dataset version: {sorted(unbuilt)}"
        behind = wait_until_settled(settings.kafka, timeout=300)
        assert not any(behind.values()), f"the loop did not settle: {behind}"
        events = [event for _, event in read_events(settings.kafka)]
        yield Loop(f"http://127.0.0.1:{config.console_port}", settings, config.state_dir, timeline, events)
    finally:
        down(config.state_dir)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make setup` as root",
                    pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # script errors, refused resources
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path_factory.mktemp('chromium'))}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def look(browser: WebDriver, loop: Loop, path: str, shot: Path, found: bool = True) -> str:
    """Open ``path``, wait until every chart is drawn, save a screenshot; the page's visible text.

    A broken page fails here: a script error, a script or style the browser refused or could
    not load (the Content-Security-Policy included), or a chart that never finished drawing."""
    browser.get_log("browser")  # what earlier pages logged
    browser.get(loop.base + path)
    try:
        WebDriverWait(browser, 60).until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('.chart')].every(c => c.dataset.rendered === 'true')"))
    finally:
        browser.save_screenshot(str(shot))
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    if not found:  # the 404 of the page itself is what was asked for
        problems = [m for m in problems if not m.startswith(f"{loop.base + path} - Failed to load resource")]
    assert not problems, f"{path}: the browser reported {problems}"
    return browser.find_element(By.TAG_NAME, "body").text


def test_the_ephemeral_stack_runs_the_loop_to_a_second_champion(loop):
    """First in the module: the other tests change what a person can change (the champion)."""
    assert_final_state(loop.settings, loop.timeline, PLAN)


def test_every_dataset_version_of_the_loop_rebuilds_identically_from_its_lineage(loop):
    manifests = rebuild_every_version(loop.state_dir, ObjectStore.connect(loop.settings.s3), "transactions")
    assert len(manifests) >= 2 and any(manifest.drift is not None for manifest in manifests)


def test_the_models_page_shows_the_champion_and_who_moved_it(browser, loop, tmp_path):
    first, second = loop.promotions()[0], loop.promotions()[-1]
    models = look(browser, loop, "/models", tmp_path / "models.png")
    assert f"fraud {second.version} validator@" in models
    page = look(browser, loop, "/models/fraud", tmp_path / "model.png")
    assert f"Champion\n{second.version}" in page
    history = browser.find_element(By.ID, "promotions").text
    # the champion, the one it replaced, who
    assert f"{second.version} {second.previous_champion} validator@" in history
    assert f"{first.version} – validator@" in history
    assert browser.find_element(By.CSS_SELECTOR, "#versions tr.champion").text.startswith(f"{second.version} champion")
    assert "the console is read-only: set STREAMML_CONSOLE_TOKEN" in page
    # The browser disables every control of a disabled fieldset: what a person can press.
    assert not browser.find_element(By.CSS_SELECTOR, "#promote-form fieldset button").is_enabled()


def test_a_version_page_shows_every_rule_of_its_decision(browser, loop, tmp_path):
    champion = loop.promotions()[-1]
    page = look(browser, loop, f"/models/fraud/versions/{champion.version}", tmp_path / "version.png")
    assert "approved" in page
    rules = browser.find_element(By.ID, "rules").text
    assert "held auc" in rules and ">= floor 0.8" in rules  # the value and the threshold of each rule
    assert "ceiling 0.35" in rules and f"budget {LATENCY_BUDGET_MS} ms at batch 256" in rules
    assert "improves on champion" in rules  # judged against the first champion
    policy = browser.find_element(By.ID, "policy").text
    assert "floor auc 0.8" in policy and f"p95 latency at batch 256, at most p95 ms {LATENCY_BUDGET_MS}" in policy


def test_lineage_reaches_the_offsets_and_leads_back_from_a_raw_object(browser, loop, tmp_path):
    champion = loop.promotions()[-1]
    # The dataset the champion was trained on: the one built for the drift, or a later one.
    trained = loop.first(ModelTrained, lambda e: e.version == champion.version)
    page = look(browser, loop, f"/lineage/models/fraud/{champion.version}", tmp_path / "lineage.png")
    assert f"transactions v{trained.dataset_version}" in page
    partitions = browser.find_element(By.ID, "partitions").text
    assert "ingest.transactions" in partitions
    raw = browser.find_element(By.ID, "raw-objects")
    first_row = raw.find_elements(By.CSS_SELECTOR, "tbody tr")[0].text
    assert "ingest.transactions" in first_row and len(first_row.split()[-1]) == 32  # the MD5 of the object
    raw.find_element(By.CSS_SELECTOR, "tbody tr a").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "raw-key"))
    browser.save_screenshot(str(tmp_path / "raw.png"))
    assert f"transactions v{trained.dataset_version}" in browser.find_element(By.ID, "raw-datasets").text
    users = browser.find_element(By.ID, "raw-models")
    assert champion.version in users.text
    users.find_element(By.LINK_TEXT, champion.version).click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "version-name"))
    assert browser.find_element(By.ID, "version-name").text == champion.version


def test_dataset_pages_show_versions_rows_triggers_and_reference_plots(browser, loop, tmp_path):
    first = loop.first(DatasetReady)
    built_on_drift = loop.first(DatasetReady, lambda e: e.trigger == "drift")
    look(browser, loop, "/datasets/transactions", tmp_path / "dataset.png")
    versions = browser.find_element(By.ID, "dataset-versions").text
    assert f"v{first.version}" in versions and f"{first.rows['train']:,}" in versions
    engine = json.loads(ObjectStore.connect(loop.settings.s3).get_bytes(first.manifest_key))["engine"]
    assert "drift:" in versions and engine in versions  # the engine that built it, as its manifest says
    assert browser.find_elements(By.CSS_SELECTOR, "#rows .main-svg")  # rows per split, drawn
    version = look(browser, loop, f"/datasets/transactions/v{built_on_drift.version}", tmp_path / "dataset-version.png")
    assert "drift: built for drift.detected" in version
    charts = browser.find_elements(By.CSS_SELECTOR, ".chart .main-svg")
    features = browser.find_elements(By.CSS_SELECTOR, "#features tbody tr")
    assert len(features) >= 6 and len(charts) >= len(features)  # a drawn reference plot per feature
    assert "amount: train distribution" in version


def test_the_drift_page_marks_the_event_and_what_it_triggered(browser, loop, tmp_path):
    drift = loop.first(DriftDetected)
    built_on_drift = loop.first(DatasetReady, lambda e: e.trigger == "drift")
    # What the drift triggered: the dataset built for it, the model trained on that, and its decision
    # (the retrained champion may come from a later dataset, when the first retrain did not improve enough).
    retrained = loop.first(ModelTrained, lambda e: e.dataset_version == built_on_drift.version)
    verdict = "approved" if any(p.version == retrained.version for p in loop.promotions()) else "rejected"
    page = look(browser, loop, "/drift/fraud", tmp_path / "drift.png")
    marks = [label.text for label in browser.find_elements(By.CSS_SELECTOR, ".chart .annotation-text")]
    assert any(text.startswith("drift.detected (") for text in marks), marks  # drawn on a plot, visible
    # The champion that saw the drift (the first, or one built from late first records) keeps its
    # windows on the charts after the next promotion.
    trained_on = {e.version: e.dataset_version for e in loop.events if isinstance(e, ModelTrained)}
    saw = next(p.version for p in loop.promotions() if trained_on.get(p.version) == drift.dataset_version)
    assert "the windows of the champions before it: " in page, page
    earlier = page.split("the windows of the champions before it: ", 1)[1].split("\n", 1)[0]
    assert f"{saw} (" in earlier, earlier
    events = browser.find_element(By.ID, "drift-events").text
    assert drift.kind in events
    assert f"transactions v{built_on_drift.version}" in events
    assert f"{retrained.version} {verdict}" in events


def test_the_loop_page_shows_a_new_event_without_a_reload(browser, loop, tmp_path):
    look(browser, loop, "/loop", tmp_path / "loop-before.png")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "live-state").text == "live")
    WebDriverWait(browser, 60).until(lambda b: "ingest" in b.find_element(By.ID, "components").text)
    browser.execute_script("window.sameDocument = true")
    # The champion announced again, as `streamml models promote` does for the version already champion.
    store = ObjectStore.connect(loop.settings.s3)
    reason = f"announced again at {datetime.now(UTC):%H:%M:%S.%f}"
    champion = loop.promotions()[-1].version
    event = promote_by_hand(store, "fraud", champion, force=False, actor="console-test", reason="unused",
                            time=datetime.now(UTC))
    EventProducer(loop.settings.kafka, "console-test").send_now(event.model_copy(update={"reason": reason}))
    try:
        WebDriverWait(browser, 60).until(lambda b: reason in b.find_element(By.ID, "live-events").text)
    except TimeoutException:
        browser.save_screenshot(str(tmp_path / "loop-timeout.png"))
        raise
    time.sleep(0.5)  # let the row's highlight show in the screenshot
    browser.save_screenshot(str(tmp_path / "loop-after.png"))
    assert browser.execute_script("return window.sameDocument") is True
    newest = browser.find_elements(By.CSS_SELECTOR, "#live-events tbody tr")[0].text
    assert "model.promoted" in newest and f"fraud {champion} PROMOTED" in newest
    health = browser.find_element(By.ID, "components").text
    assert "kafka ok" in health and "object store ok" in health
    WebDriverWait(browser, 60).until(lambda b: "prep data.landed" in b.find_element(By.ID, "lags").text)


@pytest.mark.parametrize("path, named", [
    ("/models/nosuch", "no model 'nosuch' in the registry (models: fraud)"),
    ("/models/fraud/versions/d99-nosuch", "version 'd99-nosuch' of model 'fraud' does not exist"),
    ("/datasets/nosuch", "no dataset 'nosuch' in the store (datasets: transactions)"),
    ("/datasets/transactions/v999", "dataset 'transactions' has no committed version v999"),
])
def test_a_bad_url_shows_a_not_found_page_naming_what_is_missing(browser, loop, tmp_path, path, named):
    page = look(browser, loop, path, tmp_path / "not-found.png", found=False)
    assert page.splitlines()[page.splitlines().index("Not found") + 1] == named


def test_the_menu_leads_to_each_overview_and_on_to_its_pages(browser, loop, tmp_path):
    champion = loop.promotions()[-1]
    built_on_drift = loop.first(DatasetReady, lambda e: e.trigger == "drift")
    look(browser, loop, "/", tmp_path / "home.png")
    assert browser.current_url == loop.base + "/models"

    def follow(link: str, shot: str) -> None:
        browser.find_element(By.LINK_TEXT, link).click()
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.TAG_NAME, "h1").text.startswith(link))
        browser.save_screenshot(str(tmp_path / shot))

    follow("Datasets", "datasets.png")
    row = browser.find_element(By.CSS_SELECTOR, "#datasets tbody tr").text.split()
    assert row[0] == "transactions" and int(row[1]) >= built_on_drift.version  # counts the one built on drift
    follow("Lineage", "lineage-index.png")
    browser.find_element(By.CSS_SELECTOR, "#lineage-models").find_element(By.LINK_TEXT, champion.version).click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "raw-objects"))
    assert browser.current_url.endswith(f"/lineage/models/fraud/{champion.version}")
    follow("Drift", "drift-index.png")
    browser.find_element(By.CSS_SELECTOR, "#drift-models").find_element(By.LINK_TEXT, "fraud").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.ID, "drift-events"))
    assert browser.current_url == loop.base + "/drift/fraud"
