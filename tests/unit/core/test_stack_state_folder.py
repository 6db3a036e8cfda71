"""The checks `streamml up` makes on its state folder before starting anything."""

import json
import os

import pytest

from streamml.stack.files import redact, write_private
from streamml.stack.state_folder import (
    STATE_FORMAT,
    StateFolderError,
    check_free_space,
    check_state_folder,
    make_private_folder,
    mark_state_folder,
)

pytestmark = pytest.mark.unit


def test_a_new_folder_is_accepted_and_marked_in_its_mode(tmp_path):
    check_state_folder(tmp_path, ephemeral=False)
    mark_state_folder(tmp_path, ephemeral=False)
    assert json.loads((tmp_path / "state-format.json").read_text()) == {"format": STATE_FORMAT, "mode": "durable"}
    check_state_folder(tmp_path, ephemeral=False)
    with pytest.raises(StateFolderError, match="holds a durable stack; drop --ephemeral"):
        check_state_folder(tmp_path, ephemeral=True)


def test_a_folder_of_another_format_is_refused_and_kept(tmp_path):
    (tmp_path / "state-format.json").write_text(json.dumps({"format": STATE_FORMAT + 1, "mode": "durable"}))
    (tmp_path / "ceph").mkdir()
    with pytest.raises(StateFolderError) as error:
        check_state_folder(tmp_path, ephemeral=False)
    assert f"state format {STATE_FORMAT + 1}" in str(error.value) and "nothing was deleted" in str(error.value)
    assert "\n" not in str(error.value)
    assert (tmp_path / "ceph").is_dir()


def test_a_folder_of_the_earlier_unmarked_format_is_refused(tmp_path):
    (tmp_path / "ceph").mkdir()
    with pytest.raises(StateFolderError, match="earlier streamml .state format 1"):
        check_state_folder(tmp_path, ephemeral=False)


def test_a_damaged_marker_names_the_file(tmp_path):
    (tmp_path / "state-format.json").write_text("{not json")
    with pytest.raises(StateFolderError, match="state-format.json is unreadable or damaged"):
        check_state_folder(tmp_path, ephemeral=False)


def test_too_little_free_space_names_the_folder_and_the_fix(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    check_free_space(tmp_path, need=1)
    with pytest.raises(StateFolderError, match="MiB free and the stack needs at least .* --state-dir on another disk"):
        check_free_space(tmp_path, need=free + (1 << 40))


def test_private_files_are_never_readable_by_others(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.json"]  # no temporary file left


def test_the_folder_is_private_when_new_or_already_a_stack(tmp_path):
    make_private_folder(tmp_path / "new")
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    users = tmp_path / "users"
    users.mkdir(mode=0o755)
    (users / "notes.txt").write_text("mine")
    make_private_folder(users)
    assert users.stat().st_mode & 0o777 == 0o755


def test_redact():
    assert redact("cmd --secret-key=abc123 failed: abc123", ["abc123", None]) == "cmd --secret-key=*** failed: ***"
