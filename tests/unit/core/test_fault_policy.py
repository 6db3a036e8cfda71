"""The fault policy: which errors are outages, how they are retried, and how an episode shows."""

import threading
import uuid

import pytest
from botocore.stub import Stubber
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY

from streamml.faults import IO, KAFKA, OBJECT_STORE, Backoff, FaultPolicy, Interrupted, transient_dependency
from streamml.kafka import DeliveryError
from streamml.settings import S3Settings
from streamml.store import ObjectNotFound, ObjectStore, StoreError, StoreUnavailable, make_client

pytestmark = pytest.mark.unit
QUICK = Backoff(initial_s=0.001, maximum_s=0.004)


def stubbed_store() -> tuple[ObjectStore, Stubber]:
    settings = S3Settings(endpoint="http://127.0.0.1:1", access_key_id="AK", secret_access_key="SK", max_attempts=1)
    client = make_client(settings)
    return ObjectStore(settings, client), Stubber(client)


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("ServiceUnavailable", 503), ("InternalError", 500),
                                               ("503", 503), ("RequestTimeout", 400)])
def test_an_overloaded_or_failing_store_is_an_outage(code, status):
    store, stub = stubbed_store()
    stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
    with stub, pytest.raises(StoreUnavailable) as caught:
        store.get("models/fraud/champion.json")
    assert transient_dependency(caught.value) == OBJECT_STORE


def test_a_missing_object_or_a_bad_request_is_not_an_outage():
    store, stub = stubbed_store()
    stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
    stub.add_client_error("put_object", service_error_code="InvalidArgument", http_status_code=400)
    with stub:
        with pytest.raises(ObjectNotFound) as missing:
            store.get("nothing")
        with pytest.raises(StoreError) as bad:
            store.put("x", b"1")
    assert transient_dependency(missing.value) is None and transient_dependency(bad.value) is None


@pytest.mark.parametrize(("error", "dependency"), [
    (KafkaException(KafkaError(KafkaError._TRANSPORT)), KAFKA),
    (KafkaException(KafkaError(KafkaError._WAIT_COORD)), KAFKA),
    (KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)), KAFKA),
    (KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT)), KAFKA),
    (KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), None),
    (KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)), None),
    (KafkaException(KafkaError(KafkaError._TRANSPORT, fatal=True)), None),
    (DeliveryError("3 message(s) still unacknowledged", transient=True), KAFKA),
    (DeliveryError("1 message(s) not delivered: too large", transient=False), None),
    (ConnectionResetError(104, "reset"), IO),
    (ValueError("amount must be a number"), None),
])
def test_errors_are_classified_in_one_place(error, dependency):
    assert transient_dependency(error) == dependency


def samples(service: str, dependency: str) -> tuple[float, float]:
    labels = {"service": service, "dependency": dependency}
    return (REGISTRY.get_sample_value("streamml_dependency_errors_total", labels) or 0,
            REGISTRY.get_sample_value("streamml_dependency_available", labels))


def test_a_transient_error_is_retried_counted_and_logged_once_per_episode(caplog):
    service = uuid.uuid4().hex
    policy = FaultPolicy(service, QUICK)
    answers = iter([StoreUnavailable("503"), StoreUnavailable("503"), StoreUnavailable("503"), "stored"])
    seen_during = []

    def operation():
        answer = next(answers)
        if isinstance(answer, Exception):
            seen_during.append((policy.outages, samples(service, OBJECT_STORE)))
            raise answer
        return answer

    caplog.set_level("INFO", "streamml.faults")
    assert policy.retry(operation, threading.Event()) == "stored"
    assert seen_during[1] == ([OBJECT_STORE], (1, 0))  # after the first error: an outage, shown
    assert policy.outages == [] and samples(service, OBJECT_STORE) == (3, 1)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["the object store is unavailable; retrying with backoff until it answers",
                        "the object store is available again"]
    assert caplog.records[1].errors == 3


def test_a_permanent_error_is_raised_at_once():
    calls = []

    def operation():
        calls.append(1)
        raise ValueError("bad value")

    with pytest.raises(ValueError):
        FaultPolicy(uuid.uuid4().hex, QUICK).retry(operation, threading.Event())
    assert len(calls) == 1


def test_stopping_during_an_outage_interrupts_the_retry():
    stopping = threading.Event()

    def operation():
        stopping.set()
        raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))

    with pytest.raises(Interrupted, match="Kafka"):
        FaultPolicy(uuid.uuid4().hex, QUICK).retry(operation, stopping)


def test_backoff_doubles_up_to_its_bound_with_jitter():
    backoff = Backoff(initial_s=0.5, maximum_s=15.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (5, 15.0), (100, 15.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert len(set(delays)) > 1
