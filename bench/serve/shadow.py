"""What scoring a version in shadow adds to the inference server's latency, in one run.

    .venv/bin/python bench/serve/shadow.py [--slices 40] [--slice-s 1] [--concurrency 4] [--batch 1]

Two servers from this checkout serve the same champion (v1) of the same model
from two buckets of one private Ceph: in one bucket ``shadow.json`` names v2,
so that server also scores every request with v2 in its background thread and
logs both answers; the other serves the champion alone. The client threads
alternate between them slice by slice (A B B A, as ``run.py`` does), so both
meet the same noise. Printed per server: predictions/s, p50/p99, errors and
CPU per 1,000 predictions, then the ratios (the added p99 is the number to
watch) and how many records the shadow scored and dropped.
"""

from __future__ import annotations

import argparse
import http.client
import os
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families
from run import MODEL, ROOT, Server, bench_stack, compare, request_bodies

from streamml.registry.decisions import DecisionRecord, Evaluation  # noqa: E402
from streamml.registry.shadow import ShadowState, start_shadow  # noqa: E402
from streamml.store import ObjectStore  # noqa: E402


def copy_bucket(source: ObjectStore, target: ObjectStore) -> None:
    for key in source.list(""):
        target.put(key, source.get_bytes(key))


def put_in_shadow(store: ObjectStore) -> None:
    """v2 in shadow beside v1, as the validator records it (its offline decision is a placeholder here)."""
    now = datetime.now(UTC)
    offline = DecisionRecord(model=MODEL, version="v2", promote=True, reasons=[], notes=["bench"],
                             candidate=Evaluation(rows=0, metrics={}), champion_version="v1", champion=None,
                             policy={}, actor="bench", time=now)
    start_shadow(store, ShadowState(model=MODEL, version="v2", champion_version="v1", started=now,
                                    deadline=now + timedelta(hours=1), offsets={}, offline=offline, actor="bench"))


def shadow_counts(health_port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", health_port, timeout=10)
    connection.request("GET", "/metrics")
    found = {}
    for family in text_string_to_metric_families(connection.getresponse().read().decode()):
        for sample in family.samples:
            for outcome in ("scored", "dropped"):
                if sample.name == f"streamml_sdk_shadow_{outcome}_total":
                    found[outcome] = sample.value
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=40, help="measured slices, alternating between the servers")
    parser.add_argument("--slice-s", type=float, default=1.0, help="seconds per slice")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (keep-alive connections)")
    parser.add_argument("--batch", type=int, default=1, help="records per request")
    args = parser.parse_args()

    with bench_stack("streamml-bench-shadow-") as stack:
        shadowed = ObjectStore.connect(stack.store.settings.model_copy(update={"bucket": "bench-shadow"}))
        copy_bucket(stack.store, shadowed)
        put_in_shadow(shadowed)
        bodies = request_bodies(stack.records, args.batch)
        print(f"inference server, champion alone vs with a version in shadow: {args.concurrency} client threads, "
              f"{args.batch} record(s) per request, prediction log on, {os.cpu_count()} CPUs shared with the client, "
              f"load average {os.getloadavg()[0]:.1f} at the start")
        servers: dict[str, Server] = {}
        try:
            servers = {
                "champion alone": Server(ROOT, stack.env, stack.root / "serve-alone.log"),
                "with shadow": Server(ROOT, {**stack.env, "STREAMML_S3_BUCKET": "bench-shadow"},
                                      stack.root / "serve-shadow.log"),
            }
            result = compare(servers, bodies, args)
            for label, found in result.items():
                print(found.line(label))
            alone, shadow = result["champion alone"], result["with shadow"]
            counts = shadow_counts(servers["with shadow"].health)
            print(f"with shadow / alone: {shadow.predictions_per_s / alone.predictions_per_s:.2f}x predictions/s, "
                  f"p50 {shadow.p50_ms / alone.p50_ms:.2f}x, p99 {shadow.p99_ms / alone.p99_ms:.2f}x "
                  f"(+{shadow.p99_ms - alone.p99_ms:.2f} ms), CPU per prediction "
                  f"{shadow.cpu_ms_per_1000 / alone.cpu_ms_per_1000:.2f}x; shadow scored "
                  f"{counts.get('scored', 0):,.0f} records, dropped {counts.get('dropped', 0):,.0f}; "
                  f"load average {os.getloadavg()[0]:.1f} at the end")
        finally:
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
