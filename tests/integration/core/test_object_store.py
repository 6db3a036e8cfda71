"""Conditional writes on a real Ceph RADOS Gateway."""

import pytest
from pydantic import SecretStr

from streamml.store import ObjectConflict, ObjectNotFound, ObjectStore, StoreCredentialsError

pytestmark = pytest.mark.integration


def test_second_conditional_create_conflicts_and_keeps_the_first(store):
    store.create("datasets/tx/v1/manifest.json", b"first")
    with pytest.raises(ObjectConflict, match="datasets/tx/v1/manifest.json"):
        store.create("datasets/tx/v1/manifest.json", b"second")
    assert store.get_bytes("datasets/tx/v1/manifest.json") == b"first"


def test_compare_and_swap_only_from_the_current_etag(store):
    etag = store.create("models/m/champion.json", b"v1")
    new_etag = store.replace("models/m/champion.json", b"v2", etag)
    with pytest.raises(ObjectConflict):
        store.replace("models/m/champion.json", b"v3", etag)  # stale: someone else swapped
    current = store.get("models/m/champion.json")
    assert (current.data, current.etag) == (b"v2", new_etag)


def test_listing_missing_objects_and_large_uploads(store, tmp_path):
    with pytest.raises(ObjectNotFound, match="nope"):
        store.get("nope")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (70 * 1024 * 1024))  # above the multipart threshold
    store.put_file("raw/big.bin", big)
    store.put("raw/a", b"a")
    assert list(store.list("raw/")) == ["raw/a", "raw/big.bin"]
    assert len(store.get_bytes("raw/big.bin")) == 70 * 1024 * 1024


def test_wrong_credentials_are_named(stack, bucket):
    settings = stack.settings(bucket=bucket).s3.model_copy(update={"secret_access_key": SecretStr("wrong")})
    with pytest.raises(StoreCredentialsError, match="STREAMML_S3_SECRET_ACCESS_KEY"):
        ObjectStore.connect(settings)


def test_missing_bucket_is_named_when_creation_is_off(stack, unique):
    settings = stack.settings(bucket=f"absent-{unique}").s3.model_copy(update={"create_bucket": False})
    with pytest.raises(Exception, match=f"absent-{unique}"):
        ObjectStore.connect(settings)
