"""The inference server against the ceiling: a minimal route serving the same model, in one run.

    .venv/bin/python bench/serve/ceiling.py [--slices 30] [--slice-s 1] [--concurrency 4] [--batches 1,64]
                                            [--before main]

On a private Tansu broker and Ceph, with the model of ``bench/serve/run.py``,
three processes serve it side by side: this checkout's inference server
with the prediction log on, the same with it off, and ``route.py`` (a bare
ASGI route on uvicorn doing only parse_infer → predict → infer_response).
For each request size in ``--batches`` the client threads alternate between
them in ``--slice-s`` slices (A B C C B A ...), as ``run.py`` does for two.
With ``--before REF`` a fourth process joins the alternation: the server at
git ref REF (exported as ``run.py`` does) with the prediction log on, so a
change is measured against the same route in the same run.
Printed for each: requests/s, predictions/s, p50/p99, errors, the server's
CPU per 1,000 predictions and per request, and for each logging server the
prediction log's delivered and dropped counts over that request size; then
the ratios of the servers to the route, by predictions/s and by CPU per
prediction (the route's over the server's: steadier on a busy machine).
The clients share the machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

# The same model, stack, clients and alternating passes as run.py.
from run import MODEL, ROOT, Server, bench_stack, compare, export, prediction_log, request_bodies

DRAIN_S = 10  # how long the prediction log may take to deliver what a request size left buffered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=30, help="measured slices per request size, all servers")
    parser.add_argument("--slice-s", type=float, default=1.0, help="seconds per slice")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (keep-alive connections)")
    parser.add_argument("--batches", default="1,64", help="records per request, one pass each")
    parser.add_argument("--before", help="git ref of a server to compare with, logging on (e.g. main)")
    args = parser.parse_args()

    with bench_stack("streamml-bench-ceiling-") as stack:
        env, logs = stack.env, stack.root
        servers: dict[str, Server] = {}
        try:
            servers = {
                "log on": Server(ROOT, {**env, "STREAMML_SERVE_LOG_PREDICTIONS": "true"}, logs / "serve-log-on.log"),
                "log off": Server(ROOT, {**env, "STREAMML_SERVE_LOG_PREDICTIONS": "false"}, logs / "serve-off.log"),
                "route": Server(ROOT, env, logs / "route.log", ("bench/serve/route.py", MODEL, "v1")),
            }
            if args.before:
                servers[f"{args.before} log on"] = Server(export(args.before, logs / "before"), {
                    **env, "STREAMML_SERVE_LOG_PREDICTIONS": "true"}, logs / "serve-before.log")
            logging = [name for name in servers if name.endswith("log on")]
            print(f"inference server vs a minimal route: {args.concurrency} client threads, {os.cpu_count()} CPUs "
                  f"shared with the clients, load average {os.getloadavg()[0]:.1f} at the start")
            for batch in (int(b) for b in args.batches.split(",")):
                logged = {name: prediction_log(servers[name].health) for name in logging}
                result = compare(servers, request_bodies(stack.records, batch),
                                 SimpleNamespace(**{**vars(args), "batch": batch}))
                drained = {name: wait_drained(servers[name].health, logged[name]) for name in logging}
                route = result["route"]
                print(f"\n{batch} record(s) per request, load average {os.getloadavg()[0]:.1f}")
                for label, found in result.items():
                    print(f"{found.line(label)}  {found.predictions_per_s / batch:8,.0f} req/s  "
                          f"{found.cpu_ms_per_1000 * batch / 1000:6.3f} CPU ms per request  "
                          f"{found.predictions_per_s / route.predictions_per_s:.2f}x the route "
                          f"({route.cpu_ms_per_1000 / found.cpu_ms_per_1000:.2f}x by CPU per prediction)")
                for name, counts in drained.items():
                    print(f"prediction log ({name}): {counts['delivered']:,.0f} delivered, "
                          f"{counts['dropped']:,.0f} dropped, {counts['failed']:,.0f} failed")
        finally:
            for server in servers.values():
                server.stop()


def wait_drained(health_port: int, before: dict[str, float]) -> dict[str, float]:
    """The log's counts since ``before``, once they stop changing (at most DRAIN_S)."""
    deadline, last = time.monotonic() + DRAIN_S, None
    while True:
        now = prediction_log(health_port)
        counts = {name: now.get(name, 0.0) - before.get(name, 0.0) for name in ("delivered", "dropped", "failed")}
        if counts == last or time.monotonic() >= deadline:
            return counts
        last = counts
        time.sleep(0.5)


if __name__ == "__main__":
    main()
