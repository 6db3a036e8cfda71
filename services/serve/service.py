"""The inference server: one model's champion over the Open Inference Protocol, swapped on promotion.

    STREAMML_SERVE_MODEL=fraud STREAMML_SERVE_PORT=8000 python -m services.serve

The Open Inference Protocol is served on ``STREAMML_SERVE_HOST:STREAMML_SERVE_PORT``;
``/healthz``, ``/readyz`` and ``/metrics`` on ``STREAMML_HTTP_PORT`` as for every
service. The server is ready once a champion is loaded; it follows
promotions through ``streamml.sdk.client.ModelClient``, which checks each
record against the dataset spec as ingest does (``STREAMML_SERVE_INPUT_CHECKS``:
``reject`` answers 400 naming the field and the rule, ``flag`` predicts and
counts it, ``off``).
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor

import torch
from confluent_kafka import KafkaException
from pydantic import Field, field_validator

from services.serve.server import Limits, inference_app
from streamml.kafka import KafkaUnavailable, check_reachable
from streamml.sdk.client import ModelClient
from streamml.sdk.input_checks import InputChecks
from streamml.service import Service, StartupError, run
from streamml.settings import Group, ServiceSettings
from streamml.specs import NAME
from streamml.store import StoreError
from streamml.web import WebServer

log = logging.getLogger("streamml.serve")


class ServeOptions(Group):
    model: str | None = Field(None, validate_default=True, description="name of the model to serve")
    host: str = Field("127.0.0.1", description="address of the inference API")
    port: int = Field(8000, ge=0, le=65535, description="port of the inference API, 0 picks a free one")
    max_request_bytes: int = Field(16 << 20, ge=1024, description="larger request bodies are refused (413)")
    max_rows: int = Field(10_000, ge=1, description="rows per infer request")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this (else 408)")
    head_timeout_s: float = Field(10.0, gt=0, description="a request's head must arrive within this, else the "
                                  "connection is closed")
    max_connections: int = Field(1000, ge=1, description="connections served at once; past it requests get 503")
    grace_s: int = Field(10, ge=0, description="on SIGTERM, how long running requests may finish")
    log_predictions: bool = Field(True, description="send each prediction to predictions.<model>")
    reconcile_s: float = Field(30.0, gt=0, description="how often the champion pointer is re-read")
    inline_rows: int = Field(256, ge=0, description="requests of up to this many rows are predicted on the event "
                             "loop (cheapest); larger ones on a pool of one thread per core, so as not to hold up "
                             "the requests behind them")
    torch_threads: int = Field(1, ge=1, description="torch's threads within one prediction; the server already "
                               "runs one prediction per core at once")
    input_checks: InputChecks = Field(
        "flag", description="inputs that break the dataset spec: reject (400 naming the field), flag (predict, "
        "count and mark the logged prediction) or off")

    @field_validator("model")
    @classmethod
    def _named(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("set it to the registry name of the model to serve")
        if not re.fullmatch(NAME, value):
            raise ValueError(f"must match {NAME}")
        return value


class ServeSettings(ServiceSettings):
    # A mapping, not an instance, so the default is validated too: the model must be named.
    serve: ServeOptions = Field(default_factory=dict, validate_default=True)


class InferenceServer(Service[ServeSettings]):
    name = "serve"

    def load(self) -> None:
        options = self.settings.serve
        try:
            check_reachable(self.settings.kafka)
            self.client = ModelClient(self.settings, options.model, log_predictions=options.log_predictions,
                                      reconcile_s=options.reconcile_s, client_id=f"streamml-serve-{options.model}",
                                      input_checks=options.input_checks)
        except (KafkaUnavailable, KafkaException, StoreError) as error:
            raise StartupError(str(error)) from None
        # One prediction per core at once, each on one thread: with torch's default (a thread per core
        # within each prediction) the idle threads spin and take the cores from the server and the clients.
        torch.set_num_threads(options.torch_threads)
        self.predictions = ThreadPoolExecutor(os.cpu_count(), thread_name_prefix="predict")
        limits = Limits(options.max_request_bytes, options.max_rows, options.body_timeout_s, options.inline_rows)
        app = inference_app(self.client, limits, self.predictions)
        try:
            self.http = WebServer(app, options.host, options.port, head_timeout_s=options.head_timeout_s,
                                  max_connections=options.max_connections, grace_s=options.grace_s)
        except OSError as error:
            self.client.close()
            raise StartupError(f"cannot listen on STREAMML_SERVE_HOST/PORT {options.host}:{options.port}: {error}")
        self.http.start()
        log.info("serving the inference API", extra={"model": options.model, "port": self.http.port,
                                                       "version": self.client.version})

    def ready(self) -> bool:
        return hasattr(self, "client") and self.client.ready

    def serve(self) -> None:
        self.stopping.wait()

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.stop()  # running requests finish first
        if hasattr(self, "predictions"):
            self.predictions.shutdown()
        if hasattr(self, "client"):
            self.client.close()


def main() -> None:
    run(InferenceServer, ServeSettings)
