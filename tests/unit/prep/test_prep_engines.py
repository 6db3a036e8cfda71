"""Which engine builds a version and why; the settings and spec policy that choose it; Spark on demand."""

import pytest

from services.prep.engines import DUCKDB_MAX_BYTES, choose_engine, may_need_spark
from services.prep.service import PrepSettings
from services.prep.spark import SparkOnDemand
from streamml.settings import SettingsError, load_settings
from streamml.specs import SpecError, parse_dataset_spec

pytestmark = pytest.mark.unit
MIB = 2**20


def test_auto_takes_duckdb_up_to_the_limit_and_spark_beyond_saying_why():
    at_limit = choose_engine("auto", None, raw_bytes=64 * MIB, duckdb_max_bytes=64 * MIB)
    assert at_limit.engine == "duckdb"
    assert at_limit.reason == ("STREAMML_PREP_ENGINE is auto: 64.0 MiB of raw data <= "
                               "STREAMML_PREP_DUCKDB_MAX_BYTES (64.0 MiB)")
    above = choose_engine("auto", None, raw_bytes=64 * MIB + 1, duckdb_max_bytes=64 * MIB)
    assert above.engine == "spark" and "> STREAMML_PREP_DUCKDB_MAX_BYTES (64.0 MiB)" in above.reason
    small = choose_engine("auto", None, raw_bytes=3 * 2**10, duckdb_max_bytes=64 * MIB)
    assert "3.0 KiB of raw data" in small.reason


def test_an_explicit_setting_is_followed_whatever_the_size():
    assert choose_engine("spark", None, 1, DUCKDB_MAX_BYTES).engine == "spark"
    duckdb = choose_engine("duckdb", None, 10 * DUCKDB_MAX_BYTES, DUCKDB_MAX_BYTES)
    assert (duckdb.engine, duckdb.reason) == ("duckdb", "STREAMML_PREP_ENGINE is duckdb")


def test_the_spec_policy_overrides_the_setting_both_ways():
    spark = choose_engine("duckdb", "spark", 1, DUCKDB_MAX_BYTES)
    assert (spark.engine, spark.reason) == ("spark", "the spec's prep.engine is spark")
    assert choose_engine("spark", "duckdb", 1, DUCKDB_MAX_BYTES).engine == "duckdb"
    auto = choose_engine("spark", "auto", 1, DUCKDB_MAX_BYTES)
    assert auto.engine == "duckdb" and auto.reason.startswith("the spec's prep.engine is auto: ")


def test_spark_may_be_needed_unless_every_dataset_resolves_to_duckdb():
    assert not may_need_spark("duckdb", [None, "duckdb"])
    assert may_need_spark("duckdb", [None, "spark"])
    assert may_need_spark("duckdb", ["auto"])
    assert may_need_spark("auto", [None])
    assert not may_need_spark("spark", ["duckdb"])
    assert not may_need_spark("auto", [])


def test_the_engine_setting_defaults_to_auto_and_a_bad_value_stops_the_start_naming_it(monkeypatch):
    settings = load_settings(PrepSettings)
    assert (settings.prep.engine, settings.prep.duckdb_max_bytes) == ("auto", DUCKDB_MAX_BYTES)
    monkeypatch.setenv("STREAMML_PREP_ENGINE", "sprak")
    monkeypatch.setenv("STREAMML_PREP_DUCKDB_MAX_BYTES", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings(PrepSettings)
    text = str(caught.value)
    assert "STREAMML_PREP_ENGINE='sprak'" in text and "'spark', 'duckdb' or 'auto'" in text
    assert "STREAMML_PREP_DUCKDB_MAX_BYTES='-1'" in text


def test_a_spec_names_its_engine_or_is_refused_naming_the_field():
    document = {"name": "d", "key": "id", "fields": [{"name": "id", "type": "string"}]}
    assert parse_dataset_spec(document).prep.engine is None
    assert parse_dataset_spec({**document, "prep": {"engine": "spark"}}).prep.engine == "spark"
    with pytest.raises(SpecError, match="prep.engine"):
        parse_dataset_spec({**document, "prep": {"engine": "pandas"}})


class FakeSession:
    stopped = 0

    def stop(self) -> None:
        self.stopped += 1


def test_spark_starts_on_the_first_call_only_and_stops_once():
    started: list[FakeSession] = []
    spark = SparkOnDemand(lambda: started.append(FakeSession()) or started[-1])
    spark.stop()  # never started: nothing to stop
    assert started == []
    assert spark() is spark() is started[0] and len(started) == 1
    spark.stop()
    spark.stop()
    assert started[0].stopped == 1
