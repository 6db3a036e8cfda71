"""Prep's two engines and the DuckDB reference on the same raw data, with peak RSS.

    .venv/bin/python bench/prep/run.py [--rows 2000000,20000000] [--master local[2]] [--quantile-memory]

For each row count it generates the raw transactions once
(``.cache/bench/prep/``) and runs, each in a fresh process that samples its
own peak RSS (a JVM child included):

- the DuckDB engine (``services/prep/duckdb_job.py``) on local files, and
  on the same objects landed in a Ceph started for the run (the prep
  service's path: reads through pyarrow's S3 filesystem, one PUT a split);
- the DuckDB reference: the reference engine as it was before it shipped
  (``services/prep/reference.py`` at commit ``REFERENCE_COMMIT``, read
  from git), on local files;
- Spark: session start, the first (cold) job and a warm second job, local
  files, in one process.

The DuckDB runs alternate (reference, engine, reference, engine) so load
drifts hit both alike; the best of two is compared. It prints the times,
the ratios the prep README quotes, whether the engines' content hashes
agree, and the load average before and after: on a shared machine it
explains much of the spread between runs.

``--quantile-memory`` adds the comparison of prep's memory with the
quantiles taken the way they were before (``exact_cuts.py``: each column
gathered into one Spark row) and the way they are now (bounded samples).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.prep.duckdb_job import prepare_with_duckdb  # noqa: E402
from services.prep.job import prepare_with_spark  # noqa: E402
from services.prep.spark import spark_session  # noqa: E402
from services.prep.synthetic import raw_transactions, write_raw  # noqa: E402
from streamml.specs import load_dataset_spec  # noqa: E402

SPEC = ROOT / "examples" / "datasets" / "transactions.yaml"
WORK = ROOT / ".cache" / "bench" / "prep"
REFERENCE_COMMIT = "41537d4"  # the last commit with services/prep/reference.py


class PeakRss:
    """Samples the RSS of this process and its children (the JVM) until stopped."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak_total = 0
        self.peak_jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            children = 0
            for child in me.children(recursive=True):
                try:
                    children += child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.peak_jvm = max(self.peak_jvm, children)
            self.peak_total = max(self.peak_total, me.memory_info().rss + children)
            self._stop.wait(self.interval_s)


def raw_files(rows: int, files: int) -> list[str]:
    folder = WORK / f"raw-{rows}"
    if not folder.is_dir():
        started = time.perf_counter()
        write_raw(raw_transactions(rows, seed=1), folder, files=files)
        print(f"generated {rows:,} raw rows in {files} files: {time.perf_counter() - started:.1f} s")
    return [str(path) for path in sorted(folder.glob("*.parquet"))]


def timed(run):
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def heap_pools(spark):
    factory = spark._jvm.java.lang.management.ManagementFactory
    return [pool for pool in factory.getMemoryPoolMXBeans() if str(pool.getType()) == "Heap memory"]


def rank_errors(train, plans, cuts) -> float:
    """Largest distance between an edge's rank, [P(X < e), P(X <= e)], and the nearest reference probability."""
    import pyspark.sql.functions as F

    from services.prep import fit

    aggregates = []
    for plan in plans:
        column = F.col(plan.name).cast("double")
        aggregates.append(F.count(column).alias(f"{plan.name}#n"))
        for i, edge in enumerate(cuts[plan.name].edges):
            aggregates.append(F.count(F.when(column < edge, 1)).alias(f"{plan.name}#{i}<"))
            aggregates.append(F.count(F.when(column <= edge, 1)).alias(f"{plan.name}#{i}<="))
    row = train.agg(*aggregates).first()
    worst = 0.0
    for plan in plans:
        n = row[f"{plan.name}#n"]
        for i in range(len(cuts[plan.name].edges)):
            low, high = row[f"{plan.name}#{i}<"] / n, row[f"{plan.name}#{i}<="] / n
            worst = max(worst, min(max(low - p, p - high, 0.0) for p in fit.REFERENCE_QUANTILES))
    return worst


def memory_child(args) -> None:
    """One job with the quantiles taken ``args.child`` ways; prints one JSON line."""
    from services.prep import job

    variant = job.numeric_cuts
    if args.child == "exact":
        from exact_cuts import exact_numeric_cuts

        variant = exact_numeric_cuts
    measured = {}

    def cuts_measured(train, spec, plans):
        spark.sparkContext._jvm.java.lang.System.gc()
        for pool in heap_pools(spark):
            pool.resetPeakUsage()
        started = time.perf_counter()
        result = variant(train, spec, plans)
        measured["cuts_s"] = time.perf_counter() - started
        measured["heap_peak"] = sum(pool.getPeakUsage().getUsed() for pool in heap_pools(spark))
        measured["rank_error"] = rank_errors(train, plans, result[0])
        return result

    job.numeric_cuts = cuts_measured
    spec = load_dataset_spec(SPEC)
    paths = raw_files(args.rows, args.files)
    with PeakRss() as rss:
        spark = spark_session(args.master, WORK / f"state-{args.child}", driver_memory=args.driver_memory)
        _, job_s = timed(lambda: prepare_with_spark(spark, spec, paths, str(WORK / f"out-{args.child}")))
    spark.stop()
    print(json.dumps({"statistics": args.child, "job_s": job_s, "peak_rss": rss.peak_total, "peak_jvm": rss.peak_jvm,
                      **measured}))


def memory_comparison(args) -> None:
    print(f"\nprep's memory on {args.rows:,} rows, quantiles taken before and after the change "
          f"(one process each, load average {os.getloadavg()[0]:.2f}):")
    print(f"{'statistics':<38} {'peak RSS':>10} {'of it JVM':>10} {'heap in cuts':>13} {'cuts':>7} {'job':>7} "
          f"{'rank error':>11}")
    for child, label in (("exact", "before: columns gathered into one row"), ("sampled", "after: bounded samples")):
        command = [sys.executable, __file__, "--child", child, "--rows", str(args.rows), "--files", str(args.files),
                   "--master", args.master, "--driver-memory", args.driver_memory]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT / "bench" / "prep")
        if done.returncode != 0:
            print(f"{label}: failed\n{done.stderr[-3000:]}")
            continue
        found = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:<38} {found['peak_rss'] / 2**20:>7,.0f} MiB {found['peak_jvm'] / 2**20:>6,.0f} MiB "
              f"{found['heap_peak'] / 2**20:>9,.0f} MiB {found['cuts_s']:>6.1f}s {found['job_s']:>6.1f}s "
              f"{found['rank_error'] * 100:>9.3f}pp")


def reference_engine():
    """``prepare_with_duckdb`` of the reference engine at REFERENCE_COMMIT, loaded from git."""
    import importlib.util

    source = subprocess.run(["git", "show", f"{REFERENCE_COMMIT}:services/prep/reference.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = WORK / "reference_at_commit.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("prep_reference_at_commit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prepare_with_duckdb


def engine_child(args) -> None:
    """One engine run in this fresh process; prints one JSON line with its times, hashes and peak RSS."""
    spec = load_dataset_spec(SPEC)
    paths = raw_files(args.rows, args.files)
    out = str(WORK / f"out-{args.child}")
    found = {}
    with PeakRss() as rss:
        if args.child == "reference":
            result, found["job_s"] = timed(lambda: reference_engine()(spec, paths, out))
        elif args.child == "duckdb":
            result, found["job_s"] = timed(lambda: prepare_with_duckdb(spec, paths, out))
        elif args.child == "duckdb-store":
            s3 = json.loads(os.environ["BENCH_S3"])
            from streamml.settings import S3Settings

            settings = S3Settings(**s3)
            uris = [f"s3a://{settings.bucket}/raw/{Path(path).name}" for path in paths]
            out = f"s3a://{settings.bucket}/datasets/bench/v1"
            result, found["job_s"] = timed(lambda: prepare_with_duckdb(spec, uris, out, settings))
        else:
            spark, found["start_s"] = timed(
                lambda: spark_session(args.master, WORK / "state", driver_memory=args.driver_memory))
            _, found["cold_s"] = timed(lambda: prepare_with_spark(spark, spec, paths, out))
            result, found["job_s"] = timed(lambda: prepare_with_spark(spark, spec, paths, out))
            spark.stop()
    print(json.dumps({**found, "peak_rss": rss.peak_total, "peak_jvm": rss.peak_jvm,
                      "hashes": result.content_sha256, "rows": result.rows, "input": result.counts.input}))


def run_child(args, child: str, rows: int, env: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--child", child, "--rows", str(rows), "--files", str(args.files),
               "--master", args.master, "--driver-memory", args.driver_memory]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT / "bench" / "prep",
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{child} on {rows:,} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def landed_in_ceph(paths: list[str]):
    """A Ceph started for the run, with ``paths`` landed in a bucket; yields its S3 settings as JSON."""
    import shutil
    import tempfile
    from contextlib import contextmanager

    from streamml.settings import S3Settings
    from streamml.stack.ceph import CephCluster
    from streamml.stack.ports import free_port
    from streamml.store import ObjectStore

    @contextmanager
    def started():
        root = Path(tempfile.mkdtemp(prefix="bench-prep-ceph-"))
        ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
        try:
            endpoint = ceph.start()
            s3 = {"endpoint": endpoint.url, "bucket": "bench", "region": endpoint.region,
                  "access_key_id": endpoint.access_key, "secret_access_key": endpoint.secret_key}
            store = ObjectStore.connect(S3Settings(**s3))
            for path in paths:
                store.put(f"raw/{Path(path).name}", Path(path).read_bytes())
            yield json.dumps(s3)
        finally:
            ceph.stop()
            shutil.rmtree(root, ignore_errors=True)

    return started()


def mib(size: int) -> str:
    return f"{size / 2**20:>7,.0f} MiB"


def compare(args, rows: int) -> None:
    paths = raw_files(rows, args.files)
    raw_bytes = sum(Path(path).stat().st_size for path in paths)
    print(f"\n{rows:,} rows, {raw_bytes / 2**20:,.0f} MiB of raw Parquet in {len(paths)} files; "
          f"load average before: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)")
    runs = {"reference": [], "duckdb": []}
    for _ in range(2):  # alternating, so load drifts hit both alike
        for child in runs:
            runs[child].append(run_child(args, child, rows))
    with landed_in_ceph(paths) as s3:
        from_store = run_child(args, "duckdb-store", rows, {"BENCH_S3": s3})
    spark = run_child(args, "spark", rows)
    best = {child: min(found, key=lambda f: f["job_s"]) for child, found in runs.items()}
    print(f"{'':<40} {'time':>8} {'peak RSS':>11}")
    for label, found in (("DuckDB reference (local files)", best["reference"]),
                         ("DuckDB engine (local files)", best["duckdb"]),
                         ("DuckDB engine (from Ceph, to Ceph)", from_store)):
        print(f"{label:<40} {found['job_s']:>7.1f}s {mib(found['peak_rss'])}")
    print(f"{'Spark session start (' + args.master + ')':<40} {spark['start_s']:>7.1f}s")
    print(f"{'Spark cold job (local files)':<40} {spark['cold_s']:>7.1f}s {mib(spark['peak_rss'])} "
          f"(JVM {mib(spark['peak_jvm']).strip()})")
    print(f"{'Spark warm job (local files)':<40} {spark['job_s']:>7.1f}s")
    print("two DuckDB passes each: reference " + ", ".join(f"{f['job_s']:.1f}s" for f in runs["reference"])
          + "; engine " + ", ".join(f"{f['job_s']:.1f}s" for f in runs["duckdb"]))
    reference_s = best["reference"]["job_s"]
    print(f"DuckDB engine / reference:          local {best['duckdb']['job_s'] / reference_s:5.2f}x, "
          f"from Ceph {from_store['job_s'] / reference_s:5.2f}x")
    print(f"Spark warm / DuckDB engine (Ceph):  {spark['job_s'] / from_store['job_s']:5.2f}x   "
          f"Spark cold + start / DuckDB engine (Ceph): {(spark['start_s'] + spark['cold_s']) / from_store['job_s']:5.2f}x")
    hashes = {found["hashes"].__repr__() for found in (*runs["reference"], *runs["duckdb"], from_store, spark)}
    print(f"same content hashes in every run: {len(hashes) == 1}  rows out: {spark['rows']}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2000000", help="row counts, comma-separated")
    parser.add_argument("--files", type=int, default=20, help="raw Parquet objects")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--quantile-memory", action="store_true", help="also compare the quantiles' memory")
    parser.add_argument("--child", choices=["exact", "sampled", "reference", "duckdb", "duckdb-store", "spark"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.rows = int(args.rows)
    if args.child in ("exact", "sampled"):
        memory_child(args)
        return
    if args.child:
        engine_child(args)
        return
    for rows in (int(count) for count in args.rows.split(",")):
        compare(args, rows)
    if args.quantile_memory:
        args.rows = int(args.rows.split(",")[0])
        memory_comparison(args)


if __name__ == "__main__":
    main()
