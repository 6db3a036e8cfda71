import json
import logging

from streamml.logs import JsonFormatter


def record(message: str, **extra) -> logging.LogRecord:
    entry = logging.LogRecord("streamml.ingest", logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return entry


def test_a_line_carries_the_process_fields_and_the_callers_context():
    line = json.loads(JsonFormatter("ingest", {"member": 1}).format(record("landed", rows=50)))
    assert line["service"] == "ingest"
    assert line["message"] == "landed"
    assert line["member"] == 1
    assert line["rows"] == 50


def test_without_process_fields_a_line_has_only_the_callers_context():
    line = json.loads(JsonFormatter("prep").format(record("built", dataset="transactions")))
    assert "member" not in line
    assert line["dataset"] == "transactions"
