"""Spark prep on a warm session against the DuckDB reference, on the same raw data.

    .venv/bin/python bench/prep/run.py [--rows 2000000] [--master local[2]]

Generates the raw transactions once (``.cache/bench/prep/``), runs the Spark
job once to warm the session (JIT, codegen caches) and times a second run,
times the reference engine on the same files, and prints both times, their
ratio, whether their content hashes agree, and the Spark driver's peak RSS
(Python plus its JVM gateway child). The load average is printed too: on a
shared machine it explains much of the spread between runs.

Then prep's memory with the quantiles taken the way they were before
(``exact_cuts.py``: each column gathered into one Spark row) and the way they
are now (bounded samples, ``services/prep/fit.py``): one fresh process each,
one job each on the same rows, printing the peak RSS of the process and its
JVM, the JVM heap's peak during the quantile step, the step's time, and how
far each reference edge is from the quantile it stands for (the rank error).
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

from services.prep.job import prepare_with_spark  # noqa: E402
from services.prep.reference import prepare_with_duckdb  # noqa: E402
from services.prep.spark import spark_session  # noqa: E402
from services.prep.synthetic import raw_transactions, write_raw  # noqa: E402
from streamml.specs import load_dataset_spec  # noqa: E402

SPEC = ROOT / "examples" / "datasets" / "transactions.yaml"
WORK = ROOT / ".cache" / "bench" / "prep"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=20, help="raw Parquet objects")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--child", choices=["exact", "sampled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args)
        return

    spec = load_dataset_spec(SPEC)
    paths = raw_files(args.rows, args.files)
    print(f"load average before: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)")
    with PeakRss() as rss:
        spark, start_s = timed(
            lambda: spark_session(args.master, WORK / "state", driver_memory=args.driver_memory)
        )
        _, cold_s = timed(lambda: prepare_with_spark(spark, spec, paths, str(WORK / "out-spark")))
        by_spark, warm_s = timed(lambda: prepare_with_spark(spark, spec, paths, str(WORK / "out-spark")))
    spark.stop()
    by_reference, reference_s = timed(lambda: prepare_with_duckdb(spec, paths, str(WORK / "out-reference")))

    print(f"rows in: {by_spark.counts.input:,}  out: {by_spark.rows}")
    print(f"spark session start ({args.master}):  {start_s:6.1f} s")
    print(f"spark first (cold) job:            {cold_s:6.1f} s")
    print(f"spark warm job:                    {warm_s:6.1f} s")
    print(f"reference (duckdb + numpy):        {reference_s:6.1f} s")
    print(f"spark warm / reference:            {warm_s / reference_s:6.2f}x")
    same = (
        by_spark.content_sha256 == by_reference.content_sha256
        and by_spark.transform == by_reference.transform
        and by_spark.reference == by_reference.reference
    )
    print(f"same content hashes and statistics: {same}")
    print(f"spark driver peak RSS: {rss.peak_total / 2**20:,.0f} MiB (JVM {rss.peak_jvm / 2**20:,.0f} MiB)")
    memory_comparison(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
