"""Peak memory of ``streamml publish`` on a large file, before and after a change, in one run.

    .venv/bin/python bench/publish/run.py [--rows 1800000] [--formats jsonl csv parquet] [--before main]

Writes the demo's transactions (``streamml.datagen``) as JSON Lines, CSV and
Parquet files of a few hundred MB in a temporary folder, starts a private
Tansu broker (in memory), and publishes each file with ``streamml publish``
as the git ref ``--before`` has it (its ``services`` and ``streamml``
packages exported with ``git archive``) and as this checkout has it, one
after the other. Each run is measured with ``/usr/bin/time -v``: peak RSS
(the kernel's high-water mark of the process), wall and CPU time. A run's
rows are all sent (the command's last line says how many), so both pay for
the same work. The load average is printed, since CPU and wall time move
with other work on a shared machine; peak RSS much less.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
import pyarrow.csv as pcsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from streamml.datagen import to_json_records, transactions  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.tansu import TansuBroker  # noqa: E402

CHUNK = 200_000
SPECS = ROOT / "examples" / "datasets"


def write_files(folder: Path, rows: int, formats: list[str]) -> dict[str, Path]:
    """The same rows in each format, written a chunk at a time."""
    paths = {kind: folder / f"transactions.{kind}" for kind in formats}
    writers: dict[str, object] = {}
    with open(paths.get("jsonl", os.devnull), "wb") as jsonl:
        for start in range(0, rows, CHUNK):
            columns = transactions(min(CHUNK, rows - start), seed=1, start=start)
            # Seconds since the epoch in the generator; a time column in the files, as an export has it.
            table = pa.table({**columns, "ts": pa.array(columns["ts"] * 1_000_000, pa.timestamp("us", tz="UTC"))})
            if "jsonl" in paths:
                jsonl.write(b"\n".join(to_json_records(columns)) + b"\n")
            if "csv" in paths:
                if "csv" not in writers:
                    writers["csv"] = pcsv.CSVWriter(paths["csv"], table.schema)
                writers["csv"].write_table(table)
            if "parquet" in paths:
                if "parquet" not in writers:
                    writers["parquet"] = pq.ParquetWriter(paths["parquet"], table.schema)
                writers["parquet"].write_table(table, row_group_size=50_000)
    for writer in writers.values():
        writer.close()
    return paths


def export(ref: str, into: Path) -> Path:
    """The ``services`` and ``streamml`` packages at git ref ``ref``, in a folder of their own."""
    into.mkdir()
    archive = subprocess.run(["git", "archive", ref, "services", "streamml"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(code: Path, path: Path, bootstrap: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(code), "STREAMML_KAFKA_BOOTSTRAP": bootstrap,
           "STREAMML_S3_ENDPOINT": "http://127.0.0.1:1", "STREAMML_INGEST_SPECS_DIR": str(SPECS)}
    env.pop("STREAMML_STACK_DIR", None)
    command = ["/usr/bin/time", "-v", sys.executable, "-c", "from streamml.cli import main; main()",
               "publish", "transactions", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def field(name: str) -> str:
        return re.search(rf"{re.escape(name)}: (.+)", done.stderr)[1].strip()

    published = re.search(r"published (\d+) records", done.stdout)
    return {"rss_mib": f"{int(field('Maximum resident set size (kbytes)')) / 1024:,.0f}",
            "wall": field("Elapsed (wall clock) time (h:mm:ss or m:ss)"),
            "cpu_s": f"{float(field('User time (seconds)')) + float(field('System time (seconds)')):.1f}",
            "records": published[1] if published else "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_800_000)
    parser.add_argument("--formats", nargs="+", default=["jsonl", "csv", "parquet"],
                        choices=["jsonl", "csv", "parquet"])
    parser.add_argument("--before", default="main", help="git ref to compare with")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as temporary:
        root = Path(temporary)
        paths = write_files(root, args.rows, args.formats)
        before = export(args.before, root / "before")
        broker = TansuBroker(root, port=free_port(), log=lambda _: None)
        bootstrap = broker.start()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("ingest.transactions", 3, 1)])["ingest.transactions"].result()
        del admin  # otherwise it logs the broker's going away at the end
        try:
            print(f"{'file':<28} {'MB':>6}  {'code':<8} {'peak RSS MiB':>12} {'wall':>8} {'CPU s':>6} {'records':>9}")
            for kind, path in paths.items():
                size = path.stat().st_size / 1e6
                for name, code in ((args.before, before), ("this", ROOT)):
                    result = measure(code, path, bootstrap)
                    print(f"{path.name:<28} {size:>6.0f}  {name:<8} {result['rss_mib']:>12} {result['wall']:>8} "
                          f"{result['cpu_s']:>6} {result['records']:>9}", flush=True)
        finally:
            broker.stop()
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
