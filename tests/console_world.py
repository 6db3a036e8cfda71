"""A registry as the console reads it, written to an object store the way the services write theirs.

``fill`` commits dataset versions (real Parquet splits, each version's lineage
naming every raw object landed before it, as prep's do), model versions (the
trainer's own files and card, trained once on the synthetic dataset of
``registry_world``), the validator's decision on each (its own ``decide`` on
metrics that vary from version to version), the champion moved by
compare-and-swap through every approved version, and a monitor state with
window reports, label windows, thresholds and drift events: the previous
champion's windows drift and raise the event, the current champion's are
clean, each kept by the monitor's own writer. The console's
page tests and ``bench/console`` use it.

    world = fill(store, model_versions=50, dataset_versions=20)
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from registry_world import DATASET, MODEL, POLICY, dataset, trained
from services.monitor.drift import MonitorThresholds
from services.monitor.state import write_state
from services.trainer.artifact import model_card, state_dict_bytes
from services.trainer.publish import VersionFile, publish_version
from services.trainer.synthetic_store import commit_version
from services.validator.decide import decide
from services.validator.policy import parse_policy
from services.validator.promote import decision_record, record_decision
from streamml.events import DriftDetected, DriftWindow, FeatureDrift
from streamml.manifest import RawSource
from streamml.registry.champion import set_champion
from streamml.registry.decisions import Evaluation, Latency, MetricInterval, SliceEvaluation
from streamml.registry.keys import CARD_FILE, STATE_DICT_FILE, raw_object_key, raw_partition_prefix
from streamml.registry.models import read_champion
from streamml.registry.monitor import ColumnReport, MonitorState, PerformanceReport, TestReport, WindowReport

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
TOPIC = f"ingest.{DATASET}"
PARTITIONS = 4
RAW_PER_VERSION = 2  # raw objects landed per partition between two dataset versions
RECORDS_PER_RAW = 500
DRIFT_EVENT_ID = "world-drift-1"
CONSOLE_TOKEN = "s3cret-console-token"  # the token of the consoles that may promote and roll back


@dataclass(frozen=True)
class World:
    model: str
    dataset: str
    model_versions: list[str]
    dataset_versions: list[int]
    raw_keys: list[str]
    champion: str
    drift_event: DriftDetected


def fill(store, model_versions: int = 6, dataset_versions: int = 3, seed: int = 11) -> World:
    rng = random.Random(seed)
    raw_keys, lineage = _raw_objects(store, dataset_versions)
    manifests = []
    for number in range(1, dataset_versions + 1):
        manifest, splits = dataset(number)
        trigger = f"drift:{DRIFT_EVENT_ID}" if number == dataset_versions and number > 1 else "rows"
        manifest = manifest.model_copy(update={
            "created": START + timedelta(hours=number), "trigger": trigger,
            "lineage": lineage[: number * PARTITIONS * RAW_PER_VERSION]})
        manifests.append(commit_version(store, manifest, splits))
    model = trained("strong")
    policy = parse_policy(yaml.safe_load(POLICY))
    names = []
    for index in range(model_versions):
        manifest = manifests[index * dataset_versions // model_versions]
        name = f"d{manifest.version}-{index:04d}"
        created = manifest.created + timedelta(minutes=10 + index)
        card = model_card(spec=model.spec, manifest=manifest, layout=model.layout, result=model.result,
                          portable=model.portable, model_version=name, code_version="world", created=created)
        files = [VersionFile(model.portable.filename, model.portable.data),
                 VersionFile(STATE_DICT_FILE, state_dict_bytes(model.result.net)),
                 VersionFile(CARD_FILE, json.dumps(card).encode())]
        assert publish_version(store, MODEL, name, files), f"{name} was committed before"
        _judge(store, policy, name, created + timedelta(minutes=1), rng)
        names.append(name)
    champion, _ = read_champion(store, MODEL)
    event = _monitor_state(store, champion, manifests[-1].version)
    return World(MODEL, DATASET, names, [m.version for m in manifests], raw_keys, champion.version, event)


def _raw_objects(store, dataset_versions: int) -> tuple[list[str], list[RawSource]]:
    """Small real Parquet batches at the keys ingest gives them, in landing order."""
    keys, lineage = [], []
    for batch in range(dataset_versions * RAW_PER_VERSION):
        for partition in range(PARTITIONS):
            first = batch * RECORDS_PER_RAW
            last = first + RECORDS_PER_RAW - 1
            prefix = raw_partition_prefix(DATASET, TOPIC, partition, int(START.timestamp() * 1000))
            key = raw_object_key(prefix, first, last)
            buffer = io.BytesIO()
            pq.write_table(pa.table({"_partition": [partition] * 3, "_offset": [first, first + 1, last]}), buffer)
            store.put(key, buffer.getvalue())
            keys.append(key)
            lineage.append(RawSource(key=key, topic=TOPIC, partition=partition, first_offset=first, last_offset=last,
                                     rows=RECORDS_PER_RAW))
    return keys, lineage


def _evaluation(rng: random.Random, auc: float, rows: int = 2000) -> Evaluation:
    log_loss = 0.45 - (auc - 0.8)
    return Evaluation(
        rows=rows,
        metrics={"auc": auc, "log_loss": log_loss, "accuracy": 0.9},
        intervals={"auc": MetricInterval(standard_error=0.01, low=auc - 0.02, high=auc + 0.02, method="delong")},
        slices={"cat_0": {f"cat_0_v{i}": SliceEvaluation(rows=300 + 10 * i, metrics={"auc": auc - 0.01 * i})
                          for i in range(1, 4)}},
        latency=Latency(p50_ms=2.0 + rng.random(), p95_ms=4.0 + rng.random(), batch_size=64, calls=50),
    )


def _judge(store, policy, version: str, when: datetime, rng: random.Random) -> None:
    """The validator's verdict on ``version`` against the champion, and the promotion when it passes."""
    current, _ = read_champion(store, MODEL)
    candidate = _evaluation(rng, round(0.82 + rng.uniform(0, 0.12), 4))
    champion = _evaluation(rng, 0.86) if current else None
    verdict = decide(candidate, champion, policy)
    if verdict.promote:
        set_champion(store, MODEL, version, expected=current.version if current else None,
                     actor="validator@world:1", reason=verdict.summary, time=when)
    record_decision(store, decision_record(
        verdict, model=MODEL, version=version, candidate=candidate,
        champion_version=current.version if current else None, champion=champion, policy=policy,
        actor="validator@world:1", time=when))


def _monitor_state(store, champion, dataset_version: int, windows: int = 100) -> DriftDetected:
    """The previous champion's windows drift from 70% on and raise the event; the current one's are clean."""
    manifest, _ = dataset(1)
    thresholds = MonitorThresholds()
    began = START - timedelta(minutes=5 * windows)  # the drift comes before the version built for it
    reports, performance = [], []
    drift_at, switch = int(windows * 0.7), int(windows * 0.8)
    for index in range(windows):
        start, end = began + timedelta(minutes=5 * index), began + timedelta(minutes=5 * index + 5)
        shift = 0.3 if drift_at <= index < switch else 0.02
        columns = [_column(name, manifest.reference[name].kind, shift, thresholds) for name in manifest.features]
        drifted = any(column.drifted for column in columns)
        reports.append(WindowReport(model=MODEL, index=index, start=start, end=end, count=5000, judged=True,
                                    features=columns, covariate_drift=drifted,
                                    covariate_severity="high" if drifted else None))
        if index % 2 == 0:
            decay = 0.12 if drift_at <= index < switch else 0.01
            performance.append(PerformanceReport(model=MODEL, index=index // 2, start=start, end=end, count=800,
                                                 judged=True, metric="auc", value=0.9 * (1 - decay), baseline=0.9,
                                                 decay=decay, metric_drift=decay > 0.05, drifted=decay > 0.05))
    window = reports[drift_at]
    event = DriftDetected(model=MODEL, dataset=DATASET, dataset_version=1, kind="covariate",
                          window=DriftWindow(start=window.start, end=window.end, count=window.count),
                          features=[FeatureDrift(feature=c.column, test=t.test, statistic=t.statistic,
                                                 p_value=t.p_value, effect_size=t.effect_size)
                                    for c in window.features if c.drifted for t in c.tests if t.drifted],
                          severity="high")
    recorded = thresholds.model_dump(mode="json")
    before = [r for r in performance if r.start < reports[switch].start]
    etag = None
    if champion.previous is not None:
        etag = write_state(store, MonitorState(
            model=MODEL, version=champion.previous, dataset=DATASET, dataset_version=dataset_version - 1,
            updated=reports[switch - 1].end, thresholds=recorded, events=[event], window_reports=reports[:switch],
            performance_reports=before), None)
    write_state(store, MonitorState(
        model=MODEL, version=champion.version, dataset=DATASET, dataset_version=dataset_version,
        updated=reports[-1].end, thresholds=recorded, events=[] if champion.previous else [event],
        window_reports=reports[switch:] if champion.previous else reports,
        performance_reports=performance[len(before):] if champion.previous else performance), etag)
    return event


def _column(name: str, kind: str, shift: float, thresholds: MonitorThresholds) -> ColumnReport:
    tests = ("psi", "ks") if kind == "numeric" else ("chi2",)
    reports = []
    for test in tests:
        effect = "ks" if test == "ks" else "psi"
        size = shift if effect == "psi" else shift / 2
        drifted = size >= thresholds.levels(effect).drift
        reports.append(TestReport(test=test, statistic=size * 100, p_value=1e-6 if drifted else 0.4,
                                  p_adjusted=1e-5 if drifted else 0.8, effect=effect, effect_size=size,
                                  drifted=drifted, severity="high" if drifted else None))
    bins = 10 if kind == "numeric" else 4
    return ColumnReport(column=name, kind=kind, count=5000, missing=0, bins=[f"b{i}" for i in range(bins)],
                        live=[1 / bins] * bins, reference=[1 / bins] * bins, tests=reports,
                        drifted=any(r.drifted for r in reports),
                        severity="high" if any(r.drifted for r in reports) else None)
