"""Quix Streams' S3 file sink writing Parquet, with Quix's defaults otherwise
(at-least-once, a checkpoint, hence a file per partition, every 5 s).

Runs in a virtualenv of its own, since Quix Streams pins older confluent-kafka
and pydantic releases than streamml (``run.py`` says how to make it):

    bench/ingest/.venv-quix/bin/python bench/ingest/quix_sink.py BOOTSTRAP TOPIC GROUP BUCKET

The S3 endpoint and credentials come from AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION. Writes JSON lines
to stdout, as the other tools' logs do ("partitions assigned", "consuming"
at the first record); runs until SIGTERM.
"""

from __future__ import annotations

import json
import sys
import time

from botocore.config import Config
from quixstreams import Application
from quixstreams.sinks.community.file.s3 import S3FileSink

# Path-style requests, and no CRC checksums (Ceph's RGW rejects them).
CEPH = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
              response_checksum_validation="when_required")


def say(message: str) -> None:
    print(json.dumps({"time": time.time(), "message": message}), flush=True)


class ReportingApplication(Application):
    def _on_assign(self, consumer, partitions):
        say("partitions assigned")
        return super()._on_assign(consumer, partitions)


class ReportingSink(S3FileSink):
    started = False

    def add(self, *args, **kwargs):
        if not self.started:
            self.started = True
            say("consuming")
        return super().add(*args, **kwargs)


def main() -> None:
    bootstrap, topic_name, group, bucket = sys.argv[1:5]
    app = ReportingApplication(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                               consumer_extra_config={"session.timeout.ms": 6000}, loglevel="WARNING")
    topic = app.topic(topic_name, value_deserializer="json")
    app.dataframe(topic).sink(ReportingSink(bucket=bucket, format="parquet", config=CEPH))
    app.run()


if __name__ == "__main__":
    main()
