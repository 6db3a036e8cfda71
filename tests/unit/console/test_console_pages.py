"""Every page on an in-memory registry: what a person reads on it, and a 404 that names what is missing."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import pytest
from console_world import DRIFT_EVENT_ID

from streamml.console import links
from streamml.events import DataLanded, ModelPromoted
from streamml.registry.models import read_champion

pytestmark = pytest.mark.unit


def champion_pointer(store):
    return read_champion(store, "fraud")[0]


def text(response) -> str:
    """The page as text, tags dropped: what a person reads."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text)))


def test_the_models_page_names_each_model_and_its_champion(read_only, filled):
    _, world = filled
    page = read_only.get("/models")
    assert page.status_code == 200
    assert world.model in text(page) and world.champion in text(page)
    assert read_only.get("/", follow_redirects=False).headers["location"] == "/models"


def test_a_model_page_shows_the_champion_every_version_its_decision_and_metrics(read_only, filled):
    _, world = filled
    page = text(read_only.get(links.model(world.model)))
    assert f"Champion {world.champion}" in page
    for version in world.model_versions:
        assert version in page
    assert "approved" in page and "rejected" in page
    assert "auc" in page and "log_loss" in page  # the metric columns
    assert "the console is read-only: set STREAMML_CONSOLE_TOKEN" in page


def test_a_version_page_lists_every_rule_with_its_value_and_threshold(read_only, filled):
    _, world = filled
    page = text(read_only.get(links.version(world.model, world.champion)))
    assert "approved" in page and "champion" in page
    assert re.search(r"held auc 0\.\d+ >= floor 0\.8", page)
    assert re.search(r"held latency p95 [\d.]+ ms <= budget 500 ms at batch 64", page)
    assert "floor auc 0.8" in page  # the policy table: rule, metric, threshold
    assert "model.pt2" in page  # the files, with their sha256


def test_a_rejected_version_shows_the_rule_that_failed(read_only, filled):
    store, world = filled
    from streamml.registry.decisions import read_decision

    rejected = next(v for v in world.model_versions if not read_decision(store, world.model, v).promote)
    decision = read_decision(store, world.model, rejected)
    page = text(read_only.get(links.version(world.model, rejected)))
    assert "rejected" in page
    assert f"failed {decision.reasons[0]}" in page


def test_lineage_goes_from_the_model_to_the_offsets_and_back_from_a_raw_object(read_only, filled):
    store, world = filled
    page = read_only.get(links.model_lineage(world.model, world.champion))
    shown = text(page)
    assert f"{world.dataset} v{world.dataset_versions[-1]}" in shown
    assert "ingest.transactions 0 0–2999 3,000 6" in shown  # topic, partition, offsets, rows, raw objects
    md5 = next(store.list_details(world.raw_keys[0])).etag
    assert md5 in shown
    assert links.raw(world.raw_keys[0]) in page.text
    back = text(read_only.get(links.raw(world.raw_keys[0])))
    assert "0–499" in back and md5 in back
    for number in world.dataset_versions:  # the first raw object is in every version
        assert f"{world.dataset} v{number}" in back
    assert world.champion in back and world.model_versions[0] in back


def test_dataset_pages_show_versions_rows_trigger_and_reference_plots(read_only, filled):
    _, world = filled
    page = text(read_only.get(links.dataset(world.dataset)))
    assert all(f"v{n}" in page for n in world.dataset_versions)
    version = read_only.get(links.dataset_version(world.dataset, world.dataset_versions[-1]))
    shown = text(version)
    assert f"drift: built for drift.detected {DRIFT_EVENT_ID}" in shown
    assert "train 16,000" in shown
    assert version.text.count('class="chart"') == 8  # a reference plot per feature
    assert '"type": "histogram"' in version.text  # numeric features: their train sample


def test_the_drift_page_marks_the_event_and_what_it_triggered(read_only, filled):
    _, world = filled
    page = read_only.get(links.drift(world.model))
    shown = text(page)
    assert "covariate high" in shown
    assert f"{world.dataset} v{world.dataset_versions[-1]}" in shown  # the version built for the drift
    trained_after = [v for v in world.model_versions if v.startswith(f"d{world.dataset_versions[-1]}-")]
    assert trained_after and all(v in shown for v in trained_after)
    assert page.text.count("drift.detected (covariate)") >= 8  # marked on every drifted feature's chart
    assert "psi threshold 0.1" in page.text and "metric_decay threshold 0.05" in page.text
    # The windows that drifted were the previous champion's: still shown, and where the new one began.
    store, _ = filled
    previous = champion_pointer(store).previous
    assert f"The charts also show the windows of the champions before it: {previous} (80 windows)" in shown
    assert f"champion {world.champion}" in page.text


@pytest.mark.parametrize("url, named", [
    ("/models/nosuch", "no model 'nosuch' in the registry (models: fraud)"),
    ("/models/fraud/versions/d9-0000", "version 'd9-0000' of model 'fraud' does not exist"),
    ("/models/Bad..Name/versions/x", "no model 'Bad..Name'"),
    ("/lineage/models/fraud/nope", "version 'nope' of model 'fraud' does not exist"),
    ("/datasets/nosuch", "no dataset 'nosuch'"),
    ("/datasets/transactions/v99", "dataset 'transactions' has no committed version v99"),
    ("/drift/nosuch", "no model 'nosuch'"),
    ("/lineage/raw/raw/transactions/x.parquet", "is not a raw object key"),
    ("/lineage/raw/raw/transactions/date=2026-01-01/ingest.transactions/p00009/00000000000000000000-"
     "00000000000000000001.parquet", "no raw object"),
    ("/no/such/page", "no page at /no/such/page"),
])
def test_a_bad_url_gives_a_404_page_naming_what_was_not_found(read_only, url, named):
    page = read_only.get(url)
    assert page.status_code == 404
    assert named in text(page)


def test_the_loop_page_lists_the_newest_events_with_links(read_only, filled):
    _, world = filled
    client_console = read_only.app_console
    client_console.events.add(DataLanded(dataset="transactions", object_key=world.raw_keys[0], rows=500, bytes=10,
                                         topic="ingest.transactions", partition=0, first_offset=0, last_offset=499,
                                         schema_fingerprint="f"), "id-1", datetime.now(UTC))
    client_console.events.add(ModelPromoted(model="fraud", version=world.champion, artifact_prefix="models/x/",
                                            metrics={}, actor="validator@x", reason="better"), "id-2",
                              datetime.now(UTC))
    page = read_only.get("/loop")
    shown = text(page)
    assert f"fraud {world.champion} PROMOTED" in shown
    assert "landed 500 rows" in shown
    assert links.raw(world.raw_keys[0]) in page.text
    assert "kafka ok 1 broker(s)" in shown and "ingest t 5" in shown


def test_pages_say_what_they_cost_on_metrics_and_health_answers(read_only):
    read_only.get("/models")
    metrics = read_only.get("/metrics").text
    assert 'streamml_console_requests_total{page="models",status="200"}' in metrics
    assert read_only.get("/healthz").status_code == 200 and read_only.get("/readyz").status_code == 200


def test_plotly_and_the_console_files_are_served_from_the_console(read_only):
    page = read_only.get("/models/fraud")
    script = re.search(r'src="(/static/plotly-[\d.]+\.min\.js)"', page.text)[1]
    plotly = read_only.get(script)
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert "immutable" in plotly.headers["cache-control"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in re.sub(r'href="[^"]*"', "", page.text.split("<main>")[0]).replace("http-equiv", "")
    assert read_only.get("/static/console.js").status_code == 200
    assert read_only.get("/static/../app.py").status_code == 404
