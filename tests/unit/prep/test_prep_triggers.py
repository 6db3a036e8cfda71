import pytest

from services.prep.service import trigger_for
from services.prep.versions import build_id
from streamml.specs import PrepPolicy

pytestmark = pytest.mark.unit
POLICY = PrepPolicy(min_new_rows=1000, max_staleness_s=60)


def test_enough_new_records_build_at_once():
    assert trigger_for(1000, oldest_seen=100.0, now=100.0, policy=POLICY) == "rows"


def test_stale_pending_data_builds_even_when_small():
    assert trigger_for(10, oldest_seen=0.0, now=59.0, policy=POLICY) is None
    assert trigger_for(10, oldest_seen=0.0, now=60.0, policy=POLICY) == "staleness"
    assert trigger_for(0, oldest_seen=0.0, now=600.0, policy=POLICY) is None


def test_build_id_depends_on_inputs_not_their_order():
    assert build_id(["a", "b"], "rows") == build_id(["b", "a"], "rows")
    assert build_id(["a", "b"], "rows") != build_id(["a", "c"], "rows")
