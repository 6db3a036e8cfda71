"""A real single-node Ceph (one mon, one OSD, radosgw) for the embedded stack.

Everything - config, keyrings, monitor store, OSD store, admin sockets, pid
files, logs - lives under ``<state_dir>/ceph/``, and every port is chosen per
cluster, so two clusters with different folders and ports run side by side.

Storage: the OSD uses ``memstore`` because it starts in seconds (bluestore on
a sparse file took ~9 s). memstore keeps objects in RAM. With ``osd fast
shutdown = false`` a SIGTERM makes the OSD unmount, which writes the store to
the OSD folder, and the next start loads it back: data survives a clean
``stop()``. After a crash or a SIGKILL the saved copy no longer matches the
monitor's view, so the next ``start()`` wipes the cluster and builds a fresh
one (same ports, same S3 keys, empty store): the embedded stack accepts that
loss. RAM use grows with the data stored, up to ``memstore_bytes``.

Needs the Debian packages ceph-mon, ceph-osd, radosgw and ceph-common (16.2).
No mgr daemon runs; nothing here needs one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import struct
import string
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import procs
from .ports import free_port

HOST = "127.0.0.1"
S3_USER = "streamml"
# AF_UNIX socket paths are limited to 108 bytes including the NUL.
_MAX_SOCKET_PATH = 107

# daemon (executable name) -> ceph entity name, in start order.
_DAEMONS = {"ceph-mon": "mon.a", "ceph-osd": "osd.0", "radosgw": "client.rgw.a"}

# Binary -> Debian package that ships it.
_BINARIES = {
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "radosgw": "radosgw",
    "radosgw-admin": "radosgw",
    "ceph-authtool": "ceph-common",
    "monmaptool": "ceph-common",
    "ceph": "ceph-common",
}


class CephStartError(RuntimeError):
    """A Ceph daemon or tool failed while the cluster was starting."""


@dataclass(frozen=True)
class CephEndpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "default"


def _ceph_env() -> dict[str, str]:
    """The environment minus variables that would point Ceph elsewhere."""
    env = dict(os.environ)
    for var in ("CEPH_ARGS", "CEPH_CONF"):
        env.pop(var, None)
    return env


def ceph_missing_packages() -> list[str]:
    """Debian packages whose binaries are not on PATH (empty when all are)."""
    missing = {pkg for exe, pkg in _BINARIES.items() if shutil.which(exe) is None}
    return sorted(missing)


class CephCluster:
    def __init__(
        self,
        state_dir: Path,
        rgw_port: int,
        mon_port: int | None = None,
        log: Callable[[str], object] = print,
        memstore_bytes: int = 4 << 30,
    ) -> None:
        self.dir = Path(state_dir).resolve() / "ceph"
        self.rgw_port = rgw_port
        self._requested_mon_port = mon_port
        self.log = log
        self.memstore_bytes = memstore_bytes
        self.conf = self.dir / "ceph.conf"
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "log"
        self._cluster_json = self.dir / "cluster.json"
        self._s3_json = self.dir / "s3.json"
        # Written by stop() only when the OSD saved its memstore on SIGTERM.
        self._clean_marker = self.dir / "clean-stop"
        self._started: list[str] = []  # daemons spawned by the current start()
        # The port of an existing cluster, until start() settles it.
        self.mon_port: int | None = mon_port or (self._load_meta() or {}).get("mon_port")

    # ----------------------------------------------------------------- public

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.rgw_port}"

    def start(self, timeout: float = 60) -> CephEndpoint:
        """Start (or restart) the cluster and return its S3 endpoint.

        Idempotent-ish: when all daemons already run and RGW answers, the
        stored keys are returned; daemons left over from a half-dead cluster
        are stopped first.
        """
        missing = ceph_missing_packages()
        if missing:
            raise CephStartError(
                "Ceph is not installed; run: apt-get install -y " + " ".join(missing)
            )
        t0 = time.monotonic()
        deadline = t0 + timeout
        self._started = []
        running = self.pids()
        if len(running) == len(_DAEMONS) and self.healthy() and self._s3_json.exists():
            return self._endpoint(json.loads(self._s3_json.read_text()))
        if running:
            self.log(f"ceph: stopping leftover daemons {sorted(running)}")
            self.stop()

        self._check_socket_paths()
        try:
            keys = self._start_daemons(deadline)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise
        self.log(f"ceph: S3 at {self.url} ready in {time.monotonic() - t0:.1f}s")
        return self._endpoint(keys)

    def pids(self) -> dict[str, int]:
        """Running daemons of this cluster: executable name -> pid."""
        found = {}
        for exe in _DAEMONS:
            pid = procs.read_pid(self._pid_file(exe), exe)
            if pid is not None:
                found[exe] = pid
        return found

    def healthy(self) -> bool:
        """True when RGW answers HTTP on its port (any status counts)."""
        try:
            with urllib.request.urlopen(self.url + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 10) -> None:
        """Stop the daemons: RGW, then the OSD while the mon can still
        acknowledge its shutdown (else it waits 5 s for the mon), then the mon."""
        osd_clean = False
        for exe in reversed(list(_DAEMONS)):
            pid = procs.read_pid(self._pid_file(exe), exe)
            if pid is not None:
                asked = time.time()
                clean = procs.terminate(pid, timeout)
                if exe == "ceph-osd":
                    osd_clean = clean and self._osd_saved_since(asked)
                self.log(f"ceph: stopped {exe} (pid {pid}){'' if clean else ', not cleanly'}")
            self._pid_file(exe).unlink(missing_ok=True)
        if osd_clean:
            self._clean_marker.touch()

    def _osd_saved_since(self, t: float) -> bool:
        """Whether memstore wrote its store at unmount, at or after time t.

        An exit after SIGTERM alone is not proof: an OSD that another process
        SIGKILLed a moment earlier still looks alive, then "exits" without
        saving. The file mtime comes from a coarse kernel clock, hence the slack.
        """
        try:
            return (self.dir / "osd" / "0" / "collections").stat().st_mtime >= t - 0.05
        except OSError:
            return False

    # ----------------------------------------------------------- bootstrap

    def _start_daemons(self, deadline: float) -> dict:
        meta = self._load_meta()
        fresh = meta is None or not self._clean_marker.exists() or not self._s3_json.exists()
        if fresh:
            meta = self._new_meta(meta)
        self.mon_port = meta["mon_port"]
        self._write_conf(meta["fsid"])
        self._clean_marker.unlink(missing_ok=True)
        keys = self._s3_keys()

        if fresh:
            self.log(f"ceph: creating cluster in {self.dir}")
            self._create_mon(meta["fsid"])
        self._spawn("ceph-mon", ["-i", "a"])
        if fresh:
            self._create_osd(meta["osd_uuid"], deadline)
        self._spawn("ceph-osd", ["-i", "0"])
        self._wait("OSD active", self._osd_active, deadline)
        self._spawn("radosgw", ["-n", "client.rgw.a"])
        self._wait(f"RGW on port {self.rgw_port}", self.healthy, deadline)
        if fresh:
            self._create_s3_user(keys, deadline)
        return keys

    def _load_meta(self) -> dict | None:
        try:
            return json.loads(self._cluster_json.read_text())
        except (OSError, ValueError):
            return None

    def _new_meta(self, old: dict | None) -> dict:
        """Wipe any previous cluster state and pick identities and the mon port.

        The mon port is baked into the monitor map, so it is persisted and
        reused unless the caller asks for a different one.
        """
        for sub in ("mon", "osd", "rgw", "run"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        for f in self.dir.glob("keyring.*"):
            f.unlink()
        mon_port = self._requested_mon_port or (old or {}).get("mon_port") or free_port()
        meta = {"fsid": str(uuid.uuid4()), "osd_uuid": str(uuid.uuid4()), "mon_port": mon_port}
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cluster_json.write_text(json.dumps(meta, indent=2) + "\n")
        return meta

    def _write_conf(self, fsid: str) -> None:
        d = self.dir
        for sub in ("mon", "osd", "rgw", "run", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        if self._requested_mon_port and self._requested_mon_port != self.mon_port:
            raise CephStartError(
                f"{d} holds a cluster whose mon listens on {self.mon_port}, "
                f"not {self._requested_mon_port}; use that port or a new state_dir"
            )
        # Regenerated on every start so the RGW port may change between runs.
        self.conf.write_text(f"""\
[global]
fsid = {fsid}
mon host = v2:{HOST}:{self.mon_port}
mon initial members = a
public addr = {HOST}
cluster addr = {HOST}
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = {d}/run
admin socket = {d}/run/$name.asok
# procs.spawn writes the pid files; Ceph's own would race with it.
pid file =
log file = {d}/log/$name.log
# A daemon that fails at start (say radosgw on a taken port) exits without
# writing its queued log lines unless told to; the start error quotes them.
log flush on exit = true
mon data = {d}/mon/$id
osd data = {d}/osd/$id
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
# Unmount (= save memstore to disk) on SIGTERM instead of just exiting.
osd fast shutdown = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
# The default (1 s) delays every map change; the start took ~15 s with it.
paxos propose interval = 0.05
# The mon shuts itself down below 5 % free disk by default.
mon data avail crit = 1
mon data avail warn = 2

[mon]
keyring = {d}/keyring.mon

[osd]
keyring = {d}/osd/$id/keyring

# In [client], not [global]: in [global] the daemons would read it too.
[client]
keyring = {d}/keyring.admin

[client.rgw.a]
keyring = {d}/keyring.rgw
rgw data = {d}/rgw
# Without tcp_nodelay small GETs stall ~40 ms each (Nagle + delayed ACK).
rgw frontends = beast endpoint={HOST}:{self.rgw_port} tcp_nodelay=1
""")

    def _create_mon(self, fsid: str) -> None:
        d = self.dir
        self._tool("ceph-authtool", "--create-keyring", d / "keyring.mon", "--gen-key",
                   "-n", "mon.", "--cap", "mon", "allow *")
        self._tool("ceph-authtool", "--create-keyring", d / "keyring.admin", "--gen-key",
                   "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                   "--cap", "mgr", "allow *", "--cap", "mds", "allow *")
        self._tool("ceph-authtool", "--create-keyring", d / "keyring.rgw", "--gen-key",
                   "-n", "client.rgw.a", "--cap", "mon", "allow rw", "--cap", "osd", "allow rwx")
        # Keys in the mon keyring at mkfs time become the initial auth database.
        for kr in ("keyring.admin", "keyring.rgw"):
            self._tool("ceph-authtool", d / "keyring.mon", "--import-keyring", d / kr)
        self._tool("monmaptool", "--create", "--clobber", "--addv", "a",
                   f"[v2:{HOST}:{self.mon_port}]", "--fsid", fsid, d / "monmap")
        self._tool("ceph-mon", "-c", self.conf, "--mkfs", "-i", "a",
                   "--monmap", d / "monmap", "--keyring", d / "keyring.mon")

    def _create_osd(self, osd_uuid: str, deadline: float) -> None:
        osd_dir = self.dir / "osd" / "0"
        osd_dir.mkdir(parents=True, exist_ok=True)
        key = self._tool("ceph-authtool", "--gen-print-key").strip()
        secret = self.dir / "osd-secret.json"
        secret.write_text(json.dumps({"cephx_secret": key}))
        secret.chmod(0o600)
        try:
            # Registers osd.0 and its key with the mon (which must be up).
            timeout = max(1.0, deadline - time.monotonic())
            out = self._tool("ceph", "-c", self.conf, "--connect-timeout", str(int(timeout)),
                             "osd", "new", osd_uuid, "-i", secret, timeout=timeout)
        finally:
            secret.unlink(missing_ok=True)
        if out.strip() != "0":
            raise CephStartError(f"expected osd id 0, mon answered {out.strip()!r}")
        self._tool("ceph-authtool", "--create-keyring", osd_dir / "keyring",
                   "--name", "osd.0", "--add-key", key)
        self._tool("ceph-osd", "-c", self.conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid,
                   timeout=max(1.0, deadline - time.monotonic()))

    def _create_s3_user(self, keys: dict, deadline: float) -> None:
        # Explicit keys so a rebuilt cluster serves the credentials saved before.
        self._tool("radosgw-admin", "-c", self.conf, "user", "create", f"--uid={S3_USER}",
                   f"--display-name={S3_USER}", f"--access-key={keys['access_key']}",
                   f"--secret-key={keys['secret_key']}",
                   timeout=max(1.0, deadline - time.monotonic()))

    def _s3_keys(self) -> dict:
        try:
            keys = json.loads(self._s3_json.read_text())
            if keys.get("access_key") and keys.get("secret_key"):
                return keys
        except (OSError, ValueError):
            pass
        upper = string.ascii_uppercase + string.digits
        alnum = string.ascii_letters + string.digits
        keys = {
            "access_key": "".join(secrets.choice(upper) for _ in range(20)),
            "secret_key": "".join(secrets.choice(alnum) for _ in range(40)),
        }
        # Create with 0600 from the start: the secret never sits world-readable.
        fd = os.open(self._s3_json, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f, indent=2)
        return keys

    def _endpoint(self, keys: dict) -> CephEndpoint:
        return CephEndpoint(url=self.url, access_key=keys["access_key"],
                            secret_key=keys["secret_key"])

    # ------------------------------------------------------------- helpers

    def _pid_file(self, exe: str) -> Path:
        return self.run_dir / f"{_DAEMONS[exe]}.pid"

    def _log_files(self, exe: str) -> list[Path]:
        name = _DAEMONS[exe]
        return [self.log_dir / f"{name}.log", self.log_dir / f"{name}.out"]

    def _spawn(self, exe: str, args: list[str]) -> int:
        self._started.append(exe)
        # -f: stay in the foreground so the PID we record is the daemon's.
        return procs.spawn([exe, "-f", "-c", str(self.conf), *args],
                           log_path=self._log_files(exe)[1], pid_path=self._pid_file(exe),
                           env=_ceph_env())

    def _tool(self, *args, timeout: float = 30) -> str:
        cmd = [str(a) for a in args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL, env=_ceph_env())
        except subprocess.TimeoutExpired:
            raise CephStartError(f"{cmd[0]} timed out after {timeout:.0f}s: {' '.join(cmd)}") from None
        if res.returncode != 0:
            raise CephStartError(
                f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}{res.stdout[-500:]}"
            )
        return res.stdout

    def _osd_active(self) -> bool:
        try:
            status = _admin_socket(self.run_dir / "osd.0.asok", "status")
        except (OSError, ValueError):
            return False
        return status.get("state") == "active"

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        """Poll ready() until the deadline; fail fast if a started daemon died."""
        while True:
            self._check_started_daemons()
            if ready():
                return
            if time.monotonic() >= deadline:
                raise CephStartError(f"timed out waiting for {what}\n{self._log_tails()}")
            time.sleep(0.1)

    def _check_started_daemons(self) -> None:
        for exe in self._started:
            if procs.read_pid(self._pid_file(exe), exe) is None:
                errors = error_lines(procs.tail(self._log_files(exe)[0], 20_000))
                cause = "".join(errors[-10:]) or "(no error lines in its log)\n"
                raise CephStartError(
                    f"{exe} died during start\n{cause}{self._log_tails([exe])}"
                )

    def _log_tails(self, exes: list[str] | None = None) -> str:
        out = []
        for exe in exes or list(_DAEMONS):
            for path in self._log_files(exe):
                text = procs.tail(path, 15)
                if text:
                    out.append(f"--- {path} ---\n{text}")
        return "\n".join(out)

    def _check_socket_paths(self) -> None:
        longest = self.run_dir / "client.rgw.a.asok"
        if len(os.fsencode(longest)) > _MAX_SOCKET_PATH:
            raise CephStartError(
                f"state_dir is too deep: the admin socket path {longest} exceeds "
                f"{_MAX_SOCKET_PATH} bytes; use a shorter state_dir"
            )


# "<timestamp> <thread> -1 <message>": Ceph's error priority. Lines of a crash
# dump's "recent events" start with "  -N> " and so do not repeat here.
_CEPH_ERROR_LINE = re.compile(r"^\S+ [0-9a-f]+ -1 ")


def error_lines(log_text: str) -> list[str]:
    """The error-priority lines of a Ceph daemon log, in order.

    A daemon that crashes on its way out dumps thousands of lines, which push
    the message that explains the failure out of any tail.
    """
    return [line for line in log_text.splitlines(keepends=True) if _CEPH_ERROR_LINE.match(line)]


def _admin_socket(path: Path, prefix: str) -> dict:
    """One command on a daemon's admin socket, without the slow ceph CLI.

    Protocol: send the JSON command NUL-terminated; the reply is a 4-byte
    big-endian length followed by that many bytes of JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(path))
        s.sendall(json.dumps({"prefix": prefix}).encode() + b"\0")
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError(f"admin socket {path} closed early")
            data += chunk
    return json.loads(data[4:])
