"""Spark prep on a warm session against the DuckDB reference, on the same raw data.

    .venv/bin/python bench/prep/run.py [--rows 2000000] [--master local[2]]

Generates the raw transactions once (``.cache/bench/prep/``), runs the Spark
job once to warm the session (JIT, codegen caches) and times a second run,
times the reference engine on the same files, and prints both times, their
ratio, whether their content hashes agree, and the Spark driver's peak RSS
(Python plus its JVM gateway child). The load average is printed too: on a
shared machine it explains much of the spread between runs.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=20, help="raw Parquet objects")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    args = parser.parse_args()

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
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
