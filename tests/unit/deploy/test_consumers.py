"""deploy/consumers.yaml, from which the chart builds the KEDA ScaledObjects,
matches what each service really subscribes to: the same consumer group, and
every topic KEDA watches is one the service consumes, and the other way round."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re

import pytest
import yaml
from deploy_support import REPO

from streamml.service import ConsumerService
from streamml.settings import ServiceSettings

pytestmark = pytest.mark.unit

CONSUMERS = yaml.safe_load((REPO / "deploy" / "consumers.yaml").read_text())
PREFIX = "prod."
DATASETS = ["transactions", "clicks"]
MODELS = ["fraud", "churn"]


def watched_topics(service: str) -> list[str]:
    consumer = CONSUMERS[service]
    names = list(consumer.get("topics", []))
    names += [t.replace("{dataset}", d) for t in consumer.get("per_dataset", []) for d in DATASETS]
    names += [t.replace("{model}", m) for t in consumer.get("per_model", []) for m in MODELS]
    return [PREFIX + name for name in names]


def running_service(service: str) -> ConsumerService:
    """The service's consumer, built with settings that use a topic prefix.

    Ingest runs its consumers in member processes (``member.py``)."""
    package = f"services.{service}"
    modules = [importlib.import_module(f"{package}.{name}") for name in ("service", "member")
               if importlib.util.find_spec(f"{package}.{name}")]
    defined_here = {value for module in modules for value in vars(module).values()
                    if inspect.isclass(value) and value.__module__.startswith(f"{package}.")}
    (service_cls,) = [c for c in defined_here if issubclass(c, ConsumerService) and not inspect.isabstract(c)]
    (settings_cls,) = [c for c in defined_here if issubclass(c, ServiceSettings)]
    return service_cls(settings_cls(kafka={"topic_prefix": PREFIX}))


def covers(subscription: str, topic: str) -> bool:
    # librdkafka treats a subscription starting with ^ as a regex over topic names.
    return re.fullmatch(subscription[1:], topic) is not None if subscription.startswith("^") else subscription == topic


@pytest.mark.parametrize("service", list(CONSUMERS))
def test_consumer_group_is_the_services_own(service):
    assert running_service(service).group == CONSUMERS[service]["group"]


@pytest.mark.parametrize("service", list(CONSUMERS))
def test_keda_watches_exactly_the_topics_the_service_consumes(service):
    subscriptions = running_service(service).input_topics()
    watched = watched_topics(service)
    assert watched, f"{service} has no topic to scale on"
    for topic in watched:
        assert any(covers(s, topic) for s in subscriptions), f"{service} does not consume {topic}"
    for subscription in subscriptions:
        if not subscription.startswith("^"):
            assert subscription in watched, f"KEDA does not watch {service}'s input {subscription}"
    # consumers.yaml documents a pattern subscription; it must cover the topics listed with it.
    if "pattern" in CONSUMERS[service]:
        for topic in watched:
            assert covers(CONSUMERS[service]["pattern"], topic.removeprefix(PREFIX))
