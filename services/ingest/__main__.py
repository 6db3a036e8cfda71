import os
import shutil
import tempfile
from pathlib import Path

# Guarded: the member processes are spawned, and a spawned child imports this module.
if __name__ == "__main__":
    # Set before prometheus_client is imported, here and (inherited) in the
    # members: each process writes its samples to files in this folder, and
    # the replica's /metrics adds them up. Named by pid, so a restarted
    # container (same pid) starts from an empty folder.
    metrics_dir = Path(tempfile.gettempdir()) / f"streamml-ingest-metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    from services.ingest.service import main

    try:
        main()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
