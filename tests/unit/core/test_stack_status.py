"""`streamml status` and `up` read the supervisor's stack.json: a recent crash shows, a crash loop stops `up`."""

import json
import os
import time

import pytest

from streamml.stack.control import StackError, _fail_on_crash_loop, status
from streamml.stack.supervisor import StackConfig, passed_through

pytestmark = pytest.mark.unit


def write_state(folder, services):
    state = {
        "phase": "running", "error": None, "supervisor_pid": os.getpid(),
        "kafka": {"bootstrap": "127.0.0.1:1", "pid": None, "storage": "memory", "restarts": 0, "exited_at": None},
        "s3": {"endpoint": None, "bucket": "streamml", "pids": {}, "objectstore": "memstore", "restarts": 0},
        "rgw_proxy": None, "errors": {}, "services": services,
    }
    (folder / "stack.json").write_text(json.dumps(state))


def test_a_service_that_exited_within_the_last_minute_is_restarting(tmp_path):
    write_state(tmp_path, {
        "prep": {"pid": None, "port": 1, "restarts": 2, "exited_at": time.time() - 5},
        "trainer": {"pid": None, "port": 2, "restarts": 1, "exited_at": time.time() - 3600},
    })
    health = {c.name: c for c in status(tmp_path)}
    assert health["prep"].health == "restarting" and not health["prep"].healthy
    assert "exited 5s ago" in health["prep"].detail and "restarts 2" in health["prep"].detail
    assert health["trainer"].health == "down"  # an old exit is history; not answering is down
    assert health["supervisor"].health == "ok"


def test_up_stops_waiting_for_a_crash_loop_and_quotes_the_service(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "prep.log").write_text(
        '{"message": "starting"}\nstreamml: STREAMML_PREP_JARS_DIR=\'/x\': S3A jars missing from /x/vendor/jars\n')
    state = {"services": {"prep": {"pid": None, "port": 1, "restarts": 3, "exited_at": time.time()}}}
    with pytest.raises(StackError) as caught:
        _fail_on_crash_loop(tmp_path, state)
    assert "prep exited 3 times" in str(caught.value) and "S3A jars missing from /x/vendor/jars" in str(caught.value)
    _fail_on_crash_loop(tmp_path, {"services": {"prep": {"pid": 1, "port": 1, "restarts": 1, "exited_at": 1.0}}})


def test_the_callers_settings_reach_the_services_but_not_over_the_stacks_own(tmp_path):
    passed, ignored = passed_through({
        "STREAMML_TRAINER_MAX_THREADS": "1", "STREAMML_VALIDATOR_LATENCY_ROUNDS": "9", "PATH": "/bin",
        "STREAMML_KAFKA_BOOTSTRAP": "elsewhere:9092", "STREAMML_S3_ENDPOINT": "http://aws", "STREAMML_STACK_DIR": "x",
    })
    assert passed == {"STREAMML_TRAINER_MAX_THREADS": "1", "STREAMML_VALIDATOR_LATENCY_ROUNDS": "9"}
    assert ignored == ["STREAMML_KAFKA_BOOTSTRAP", "STREAMML_S3_ENDPOINT"]


def test_the_stack_config_keeps_absolute_folders_and_names_the_jars(tmp_path):
    config = StackConfig(state_dir=tmp_path, jars_dir=tmp_path / "jars", specs_dir=tmp_path / "datasets",
                         code_dir=tmp_path / "code")
    again = StackConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config
    assert again.folder_env()["STREAMML_PREP_JARS_DIR"] == str(tmp_path / "jars")
    assert again.folder_env()["STREAMML_TRAINER_CODE_DIR"] == str(tmp_path / "code")
    assert "STREAMML_TRAINER_CODE_DIR" not in StackConfig(state_dir=tmp_path).folder_env()
