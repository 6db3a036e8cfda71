
import pytest

from streamml.topics import DEFAULT_FILE, Topic, load_topics, plan, resolve

pytestmark = pytest.mark.unit


def test_the_repository_topics_file_declares_every_event_and_dlq_topic():
    names = {t.name for t in resolve(load_topics(DEFAULT_FILE))}
    for required in ("data.landed", "dataset.ready", "model.trained", "model.promoted",
                     "model.rejected", "drift.detected", "dlq.ingest", "dlq.monitor"):
        assert required in names


def test_resolve_applies_defaults_prefix_and_override(tmp_path):
    path = tmp_path / "topics.yaml"
    path.write_text("defaults: {partitions: 3, replication_factor: 3, config: {retention.ms: '1'}}\n"
                    "topics:\n  - {name: a, partitions: 6, config: {cleanup.policy: compact}}\n")
    topics = resolve(load_topics(path), prefix="p.", extra=["ingest.tx"], replication_factor=1)
    assert topics == [
        Topic("p.a", 6, 1, {"retention.ms": "1", "cleanup.policy": "compact"}),
        Topic("p.ingest.tx", 3, 1, {"retention.ms": "1"}),
    ]


def test_plan_creates_missing_and_reports_partition_differences():
    wanted = [Topic("a", 4, 1), Topic("b", 4, 1), Topic("c", 2, 1)]
    missing, differences = plan(wanted, {"b": 2, "c": 4})
    assert [t.name for t in missing] == ["a"]
    assert differences[0].startswith("b: has 2 partitions, declared 4")
    assert "cannot be removed" in differences[1]


def test_bad_topics_file_names_the_entry(tmp_path):
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  - {name: ok}\n  - {name: 'bad name!', partitions: 0}\n")
    with pytest.raises(ValueError) as caught:
        load_topics(path)
    assert "topics.1.name" in str(caught.value) and "topics.1.partitions" in str(caught.value)
