"""Gathering a shadow's live evidence from ``predictions.<model>`` and ``feedback.<model>``.

The evidence starts at the topics' ends when the shadow started (recorded in
``models/<name>/shadow.json``), so a validator that restarts, or a second one,
reads the same messages again and reaches the same evidence: nothing of it is
kept anywhere but in the topics. A consumer without a group is assigned those
offsets and reads until ``min_predictions`` labelled requests were answered by
both versions, or the deadline passes. Messages are parsed one by one: the
evidence is bounded by ``min_predictions`` (a few thousand requests), not by
the traffic of the model. A ``PredictionBatch`` is split into its predictions
with the decoder every reader of the topic uses (``streamml.prediction_events``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from services.validator.live import Answers
from streamml.events import EventError
from streamml.faults import Interrupted
from streamml.kafka import partition_ends, unjoined_consumer
from streamml.prediction_events import prediction_bodies
from streamml.registry.shadow import ShadowState
from streamml.settings import KafkaSettings

log = logging.getLogger("streamml.validator")
# How often the joined rows are counted while reading.
COUNT_EVERY_S = 0.5


def evidence_topics(kafka: KafkaSettings, model: str) -> list[str]:
    return [kafka.topic(f"predictions.{model}"), kafka.topic(f"feedback.{model}")]


def _consumer(kafka: KafkaSettings, model: str) -> Consumer:
    return unjoined_consumer(kafka, f"streamml-validator-shadow-{model}")


def topic_ends(kafka: KafkaSettings, model: str) -> dict[str, dict[int, int]]:
    """Where the evidence of a shadow starting now begins: the end of every partition of the model's
    prediction and feedback topics."""
    consumer = _consumer(kafka, model)
    try:
        return partition_ends(consumer, evidence_topics(kafka, model), kafka.connect_timeout_s)
    finally:
        consumer.close()


class Evidence:
    """The answers and labels read so far."""

    def __init__(self, state: ShadowState) -> None:
        self.state = state
        self.champion: dict[str, list] = {"ids": [], "outputs": []}
        self.shadow: dict[str, list] = {"ids": [], "outputs": [], "latency": []}
        self.label_ids: list[str] = []
        self.labels: list = []
        self.ignored = 0  # other versions' answers, unreadable messages

    def add(self, stream: str, ce_type: str | None, value: bytes | None) -> None:
        """One message of ``predictions.<model>`` (one prediction or a batch of them) or ``feedback.<model>``."""
        if stream == "feedback":
            record = self._parsed(value)
            if record is not None and "label" in record:
                self.label_ids.append(record["request_id"])
                self.labels.append(record["label"])
            return
        try:
            bodies = prediction_bodies(ce_type, value)
        except EventError:
            self.ignored += 1
            return
        for body in bodies:
            record = self._parsed(body)
            if record is not None:
                self._add_prediction(record)

    def _parsed(self, body: bytes | None) -> dict | None:
        try:
            record = json.loads(body or b"")
            record["request_id"]
        except (ValueError, KeyError, TypeError):
            self.ignored += 1
            return None
        return record

    def _add_prediction(self, record: dict) -> None:
        request_id = record["request_id"]
        version, shadow = record.get("model_version"), bool(record.get("shadow"))
        if shadow and version == self.state.version:
            self.shadow["ids"].append(request_id)
            self.shadow["outputs"].append(record.get("output"))
            latency = record.get("latency_ms")
            self.shadow["latency"].append(np.nan if latency is None else float(latency))
        elif not shadow and version == self.state.champion_version:
            self.champion["ids"].append(request_id)
            self.champion["outputs"].append(record.get("output"))
        else:
            self.ignored += 1

    def answers(self) -> tuple[Answers, Answers, tuple[list[str], list]]:
        champion = Answers(self.champion["ids"], np.asarray(self.champion["outputs"], dtype=np.float64))
        shadow = Answers(self.shadow["ids"], np.asarray(self.shadow["outputs"], dtype=np.float64),
                         np.asarray(self.shadow["latency"], dtype=np.float64))
        return champion, shadow, (self.label_ids, self.labels)


def gather(
    kafka: KafkaSettings, state: ShadowState, enough, stopping: threading.Event,
) -> tuple[Evidence, bool]:
    """Read the evidence from the recorded offsets until ``enough(evidence)`` or the deadline.

    Returns the evidence and whether the deadline ended it. Raises Interrupted when the
    service stops: the shadow then resumes from its recorded state after the restart."""
    consumer = _consumer(kafka, state.model)
    streams = dict(zip(evidence_topics(kafka, state.model), ("predictions", "feedback"), strict=True))
    consumer.assign([TopicPartition(topic, partition, offset)
                     for topic, partitions in state.offsets.items() for partition, offset in partitions.items()])
    evidence = Evidence(state)
    counted = 0.0
    try:
        while True:
            if stopping.is_set():
                raise Interrupted(f"stopping during the shadow of {state.model} {state.version}")
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    ce_type = dict(message.headers() or []).get("ce_type")
                    evidence.add(streams.get(message.topic(), "predictions"),
                                  ce_type.decode("utf-8", "replace") if ce_type else None, message.value())
            if time.monotonic() - counted >= COUNT_EVERY_S:
                counted = time.monotonic()
                if enough(evidence):
                    return evidence, False
                if datetime.now(UTC) >= state.deadline:
                    return evidence, True
    finally:
        consumer.close()
