"""What each page shows, gathered from the registry and the live feed as plain values for its template.

One module per page family; each function returns the template's context or
raises ``NotFound`` naming what was not found, which the app answers with a
404 page.
"""


class NotFound(Exception):
    """A model, version, dataset or raw object the URL names does not exist; the text says which."""


def short_hash(value: str | None, length: int = 16) -> str:
    return value[:length] + "…" if value and len(value) > length else (value or "")
