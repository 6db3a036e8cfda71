"""Every command and the SDK find the stack one way: flag, then environment, then the nearest state folder."""

from pathlib import Path

import pytest

from streamml.locate import StackNotFound, find_settings, locate

pytestmark = pytest.mark.unit


def stack_at(folder: Path, bootstrap: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"kafka: {{bootstrap: '{bootstrap}'}}\ns3: {{endpoint: 'http://127.0.0.1:1'}}\n")
    return folder


def test_the_flag_wins_then_the_environment_then_the_nearest_folder(tmp_path):
    near = stack_at(tmp_path / "project" / ".streamml", "127.0.0.1:1001")
    elsewhere = stack_at(tmp_path / "elsewhere", "127.0.0.1:1002")
    flagged = stack_at(tmp_path / "flagged", "127.0.0.1:1003")
    below = tmp_path / "project" / "notebooks" / "deep"
    below.mkdir(parents=True)

    assert locate(flagged, {"STREAMML_STACK_DIR": str(elsewhere)}, below).state_dir == flagged
    assert locate(None, {"STREAMML_STACK_DIR": str(elsewhere)}, below).state_dir == elsewhere
    config = tmp_path / "remote.yaml"
    assert locate(None, {"STREAMML_CONFIG_FILE": str(config)}, below).config_file == config
    assert locate(None, {"STREAMML_KAFKA_BOOTSTRAP": "kafka:9092"}, below).config_file is None
    found = locate(None, {}, below)
    assert found.state_dir == near and found.config_file == near / "config.yaml"
    assert "nearest .streamml" in found.how


def test_nothing_found_names_every_place_looked_and_how_to_point_elsewhere(tmp_path):
    with pytest.raises(StackNotFound) as caught:
        locate(None, {}, tmp_path)
    message = str(caught.value)
    for named in ("--state-dir", "STREAMML_STACK_DIR", "STREAMML_CONFIG_FILE", f".streamml/config.yaml in {tmp_path}",
                  "streamml up"):
        assert named in message, message


def test_a_named_folder_without_a_stack_is_an_error_naming_it(tmp_path):
    with pytest.raises(StackNotFound, match=rf"no stack in {tmp_path / 'nothing'} \(from STREAMML_STACK_DIR\)"):
        locate(None, {"STREAMML_STACK_DIR": str(tmp_path / "nothing")}, tmp_path)


def test_settings_come_from_the_found_stack_and_variables_still_win(tmp_path, monkeypatch):
    for name in ("STREAMML_CONFIG_FILE", "STREAMML_STACK_DIR", "STREAMML_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    stack = stack_at(tmp_path / ".streamml", "127.0.0.1:1001")
    monkeypatch.chdir(tmp_path)
    assert find_settings().kafka.bootstrap == "127.0.0.1:1001"
    monkeypatch.setenv("STREAMML_KAFKA_TOPIC_PREFIX", "test.")
    settings = find_settings(stack)
    assert (settings.kafka.bootstrap, settings.kafka.topic_prefix) == ("127.0.0.1:1001", "test.")
