"""The console's settings: every service's (Kafka, S3, HTTP, logs), and the ``console`` group.

The pages, ``/healthz``, ``/readyz`` and ``/metrics`` share one port,
``STREAMML_HTTP_HOST:STREAMML_HTTP_PORT``, which defaults to 127.0.0.1:8090 here.
Promote and rollback need ``STREAMML_CONSOLE_TOKEN``; without it the console is
read-only.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from streamml.settings import Group, HttpSettings, ServiceSettings

DEFAULT_PORT = 8090
MIN_TOKEN_LENGTH = 16
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
        None, description=f"enables promote and rollback for whoever gives it, at least {MIN_TOKEN_LENGTH} "
        "characters (unset or empty: read-only)"
    )
    recent_events: int = Field(500, ge=10, le=100_000, description="events kept for the loop page")
    status_interval_s: float = Field(15.0, ge=1, description="how often consumer lag and health are measured")
    max_connections: int = Field(200, ge=1, description="connections served at once; past it requests get 503")
    grace_s: int = Field(5, ge=0, description="on SIGTERM, how long running requests may finish")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        # Compose and charts pass an unset variable as "": that is read-only, never an empty password.
        if token is None or not token.get_secret_value():
            return None
        if len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"use at least {MIN_TOKEN_LENGTH} characters, e.g. from `openssl rand -hex 16`")
        return token


class ConsoleSettings(ServiceSettings):
    http: ConsoleHttp = ConsoleHttp()
    console: ConsoleOptions = ConsoleOptions()
