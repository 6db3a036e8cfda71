"""Every URL the console links to, built in one place (pages, templates and the live feed use them)."""

from __future__ import annotations

from urllib.parse import quote


def model(name: str) -> str:
    return f"/models/{quote(name)}"


def version(name: str, version: str) -> str:
    return f"/models/{quote(name)}/versions/{quote(version)}"


def model_lineage(name: str, version: str) -> str:
    return f"/lineage/models/{quote(name)}/{quote(version)}"


def raw(key: str) -> str:
    return f"/lineage/raw/{quote(key, safe='/=')}"


def dataset(name: str) -> str:
    return f"/datasets/{quote(name)}"


def dataset_version(name: str, version: int) -> str:
    return f"/datasets/{quote(name)}/v{version}"


def drift(model_name: str) -> str:
    return f"/drift/{quote(model_name)}"
