"""Reading one stored JSON document: absent is None, unreadable is a RegistryError naming the key and the fix."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from streamml.registry.keys import RegistryError
from streamml.store import ObjectNotFound, ReadableStore

Document = TypeVar("Document", bound=BaseModel)


def read_document(store: ReadableStore, key: str, kind: type[Document], what: str, fix: str) -> Document | None:
    """The ``kind`` stored at ``key``; None when there is no such object."""
    try:
        data = store.get(key).data
    except ObjectNotFound:
        return None
    return parse_document(data, key, kind, what, fix)


def parse_document(data: bytes, key: str, kind: type[Document], what: str, fix: str) -> Document:
    """``data`` as a ``kind``, or ``<key> is not <what> (<problems>); <fix>``."""
    try:
        return kind.model_validate_json(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in error.errors(include_url=False)[:5]
        )
        raise RegistryError(f"{key} is not {what} ({problems}); {fix}") from None


def json_object(data: bytes, key: str) -> dict[str, Any]:
    """``data`` as a JSON object, or a RegistryError naming ``key``."""
    try:
        content = json.loads(data)
    except ValueError as error:
        raise RegistryError(f"{key} is not JSON: {error}") from None
    if not isinstance(content, dict):
        raise RegistryError(f"{key} must hold a JSON object, found {type(content).__name__}")
    return content
