"""Claims on dataset version numbers against the real object store: one live attempt per number, a lease
that a stalled or dead attempt loses, and the store's clock deciding when."""

import json
import threading
import time

import pytest

from registry_world import put_dataset
from services.prep.versions import Claim, Held, Lease, claim_next_version, discard
from streamml.registry.keys import claim_key

pytestmark = pytest.mark.integration


def claim_when_free(store, dataset: str, build: str, lease_s: float, timeout: float = 30) -> Claim:
    deadline = time.monotonic() + timeout
    while isinstance(found := claim_next_version(store, dataset, build, lease_s), Held):
        assert time.monotonic() < deadline, f"the claim never expired: {found}"
        time.sleep(0.2)
    return found


def test_a_live_claim_is_not_taken_even_by_an_attempt_with_the_same_inputs(store):
    first = claim_next_version(store, "tx", "build-1", lease_s=30)
    assert isinstance(first, Claim) and first.version == 1
    # A second replica, same raw objects, same trigger: the same build id. It must wait.
    second = claim_next_version(store, "tx", "build-1", lease_s=30)
    assert isinstance(second, Held) and second.version == 1 and second.attempt == first.attempt
    assert 0 < second.expires_in_s <= 30
    assert json.loads(store.get_bytes(claim_key("tx", 1)))["attempt"] == first.attempt


def test_a_claim_that_is_not_renewed_is_taken_over_once(store):
    stalled = claim_next_version(store, "tx", "b", lease_s=2)
    taken = claim_when_free(store, "tx", "b", lease_s=30)
    assert (taken.version, taken.attempt != stalled.attempt) == (1, True)
    # A third attempt, and the stalled one coming back, both find the new live claim.
    assert isinstance(claim_next_version(store, "tx", "b", lease_s=30), Held)
    assert json.loads(store.get_bytes(claim_key("tx", 1)))["attempt"] == taken.attempt


def test_renewals_keep_a_claim_past_its_lease_and_a_released_one_is_free_at_once(store):
    claim = claim_next_version(store, "tx", "b", lease_s=2)
    with Lease(store, claim, lease_s=2) as lease:
        renewed_at = store.get(claim_key("tx", 1)).modified
        while store.get(claim_key("tx", 1)).modified == renewed_at:  # wait for two renewals
            time.sleep(0.1)
        renewed_at = store.get(claim_key("tx", 1)).modified
        while store.get(claim_key("tx", 1)).modified == renewed_at:
            time.sleep(0.1)
        assert isinstance(claim_next_version(store, "tx", "b", lease_s=2), Held)
    assert not lease.lost
    lease.release()
    assert isinstance(claim_next_version(store, "tx", "b", lease_s=2), Claim)


def test_the_next_claim_follows_the_newest_committed_version(store):
    put_dataset(store, version=1)  # committed as prep commits one
    assert claim_next_version(store, "transactions", "b", lease_s=30).version == 2
    assert claim_next_version(store, "other", "b", lease_s=30).version == 1


def test_an_attempt_that_will_not_publish_leaves_nothing(store):
    claim = claim_next_version(store, "tx", "b", lease_s=30)
    store.put(claim.prefix + "train/part-0.parquet", b"rows")
    store.put(claim.prefix + "test/part-0.parquet", b"rows")
    discard(store, claim)
    assert list(store.list(claim.prefix)) == []


def test_two_attempts_taking_over_one_expired_claim_at_once_give_it_to_one(store):
    claim_next_version(store, "tx", "b", lease_s=1)
    deadline = time.monotonic() + 30
    while (store.get(claim_key("tx", 1)).age_s() or 0) <= 1.5:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    results = []
    barrier = threading.Barrier(2)

    def take():
        barrier.wait()
        results.append(claim_next_version(store, "tx", "b", lease_s=30))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(type(result).__name__ for result in results) == ["Claim", "Held"]
