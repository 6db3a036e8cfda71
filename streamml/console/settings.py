"""The console's settings: every service's (Kafka, S3, HTTP, logs), and the ``console`` group.

The pages, ``/healthz``, ``/readyz`` and ``/metrics`` share one port,
``STREAMML_HTTP_HOST:STREAMML_HTTP_PORT``, which defaults to 127.0.0.1:8090 here.
Promote and rollback need ``STREAMML_CONSOLE_TOKEN``; without it the console is
read-only.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from streamml.settings import Group, HttpSettings, ServiceSettings

DEFAULT_PORT = 8090
# The consumer group of each service (deploy/consumers.yaml): their lag and state is the loop's health.
SERVICE_GROUPS = {
    "ingest": "streamml-ingest",
    "prep": "streamml-prep",
    "trainer": "streamml-trainer",
    "validator": "streamml-validator",
    "monitor": "streamml-monitor",
}


class ConsoleHttp(HttpSettings):
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="port of the pages and of /healthz, /readyz, "
                      "/metrics; 0 picks a free one")


class ConsoleOptions(Group):
    token: SecretStr | None = Field(
        None, description="enables promote and rollback for whoever gives it (unset: read-only); secret"
    )
    recent_events: int = Field(500, ge=10, le=100_000, description="events kept for the loop page")
    status_interval_s: float = Field(15.0, ge=1, description="how often consumer lag and health are measured")
    max_connections: int = Field(200, ge=1, description="connections served at once; past it requests get 503")
    grace_s: int = Field(5, ge=0, description="on SIGTERM, how long running requests may finish")


class ConsoleSettings(ServiceSettings):
    http: ConsoleHttp = ConsoleHttp()
    console: ConsoleOptions = ConsoleOptions()
