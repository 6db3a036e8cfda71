"""How the embedded stack tells a clean daemon stop from a crash."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from streamml.stack import procs
from streamml.stack.ceph import CephCluster, error_lines


def _sleeper(tmp_path) -> int:
    return procs.spawn(["sleep", "60"], log_path=tmp_path / "sleep.log",
                       pid_path=tmp_path / "sleep.pid")


def test_terminate_reports_a_process_that_exits_on_sigterm_as_clean(tmp_path):
    pid = _sleeper(tmp_path)
    assert procs.terminate(pid, timeout=5) is True
    assert not procs.pid_alive(pid)


def test_terminate_does_not_call_a_process_that_dies_of_another_signal_clean(tmp_path):
    # As an OSD SIGKILLed a moment before looks: alive when terminate() looks,
    # gone after the SIGTERM, but not by its own clean exit.
    script = "trap 'kill -KILL $$' TERM; echo trapped; while :; do sleep 0.05; done"
    log = tmp_path / "sh.log"
    pid = procs.spawn(["sh", "-c", script], log_path=log, pid_path=tmp_path / "sh.pid")
    deadline = time.monotonic() + 10
    while "trapped" not in procs.tail(log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procs.terminate(pid, timeout=5) is False
    assert not procs.pid_alive(pid)


def test_error_lines_survive_a_crash_dump_after_them():
    log = (
        "2026-11-29T05:04:53.100+0000 7fec76fed6c0  0 starting handler: beast\n"
        "2026-11-29T05:04:53.101+0000 7fec76fed6c0 -1 failed to bind address "
        "127.0.0.1:1234: Address already in use\n"
        "2026-11-29T05:04:53.101+0000 7fec76fed6c0 -1 ERROR: failed initializing frontend\n"
        "2026-11-29T05:04:53.300+0000 7fec76fed6c0 -1 *** Caught signal (Segmentation fault) **\n"
        "--- begin dump of recent events ---\n"
        + "".join(f"   -{n}> 2026-11-29T05:04:53.101+0000 7fec76fed6c0 -1 ERROR: "
                  f"failed initializing frontend\n" for n in range(500, 0, -1))
        + "--- end dump of recent events ---\n"
    )
    errors = error_lines(log)
    assert len(errors) == 3
    assert "Address already in use" in errors[0]
    assert "Segmentation fault" in errors[2]


def test_error_lines_drop_the_colour_codes_a_daemon_writes_to_its_log():
    log = "2026-12-06T14:14:18.000+0000 7f0 -1 \x1b[0;31m ** ERROR: osd init failed: (2) No such file\x1b[0m\n"
    assert error_lines(log) == ["2026-12-06T14:14:18.000+0000 7f0 -1  ** ERROR: osd init failed: (2) No such file\n"]


def test_admin_sockets_of_a_deep_state_folder_move_to_a_short_private_folder(tmp_path):
    # tmp_path itself may be deep (parallel workers), so the shallow folder is made in the temp root.
    with tempfile.TemporaryDirectory() as short:
        shallow = CephCluster(Path(short), rgw_port=1)
        assert shallow.socket_dir == shallow.run_dir
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    first, again = CephCluster(deep, rgw_port=1), CephCluster(deep, rgw_port=1)
    assert first.socket_dir == again.socket_dir != first.run_dir  # every start finds the same sockets
    assert len(str(first.socket_dir / "client.rgw.a.asok")) <= 107
    assert CephCluster(deep / "other", rgw_port=1).socket_dir != first.socket_dir
