"""Structured JSON logs: one object per line, with the service and whatever
context (event id, dataset, model, partition) the caller passes in ``extra``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, fields: dict[str, object] | None = None) -> None:
        super().__init__()
        self.service = service
        self.fields = fields or {}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            **self.fields,
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, service: str, **fields: object) -> None:
    """JSON lines on stderr; ``fields`` go on every line (a member process's index, say)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # librdkafka and botocore are chatty at info level.
    for noisy in ("botocore", "boto3", "urllib3", "py4j", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
