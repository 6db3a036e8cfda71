"""Settings of the ingest service (``STREAMML_INGEST_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from streamml.settings import Group, ServiceSettings


class IngestOptions(Group):
    specs_dir: Path = Field(Path("datasets"), description="folder of dataset spec YAML files")
    processes: int = Field(
        2, ge=1, le=64,
        description="consumer processes in one replica, each a group member using up to a core; "
                    "set it to the replica's CPU limit",
    )
    flush_rows: int = Field(
        100_000, ge=1, description="land a batch at this many records (dead-lettered ones count)"
    )
    flush_bytes: int = Field(64 << 20, ge=1024, description="or sooner, at this many input bytes")
    flush_age_s: float = Field(
        1.0, gt=0, description="or sooner, when its first record is this old: the latency of a steady stream"
    )
    flush_idle_s: float = Field(
        0.25, gt=0, description="or sooner, once its partition is caught up and no record has come for this long"
    )
    max_record_bytes: int = Field(1 << 20, ge=64, description="larger records are dead-lettered")
    poll_batch: int = Field(2_000, ge=1, le=1_000_000, description="messages per consume call")
    max_sealed_batches: int = Field(
        4, ge=1, le=64, description="sealed batches waiting to land before polling pauses (memory bound)"
    )


class IngestSettings(ServiceSettings):
    ingest: IngestOptions = IngestOptions()
