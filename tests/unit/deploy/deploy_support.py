"""Rendering the Helm chart offline with Helm's own engine (helm-python-sdk
binds the Helm 4 Go library: no helm binary, no cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "streamml"
VALUE_SETS = ("values.yaml", "values-gpu.yaml", "values-openshift.yaml")
RELEASE = "streamml"
NAMESPACE = "ml"
# One Dockerfile builds ingest, validator and monitor (--build-arg SERVICE=<name>);
# prep (Java, the S3A jars) and the trainer (a CUDA base) keep their own.
SHARED_DOCKERFILE = "deploy/docker/Dockerfile"
OWN_DOCKERFILE = {"prep": "services/prep/Dockerfile", "trainer": "services/trainer/Dockerfile"}


def dockerfile_of(service: str) -> str:
    """The Dockerfile (relative to the repository) that builds ``service``'s image."""
    return OWN_DOCKERFILE.get(service, SHARED_DOCKERFILE)


@dataclass(frozen=True)
class Render:
    """One value set's rendered release."""

    value_set: str
    values: dict  # what the release used: chart defaults merged with the value file
    manifests: list[dict]

    def of_kind(self, kind: str) -> list[dict]:
        return [m for m in self.manifests if m["kind"] == kind]

    def named(self, kind: str, name: str) -> dict:
        matches = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(matches) == 1, f"{self.value_set}: expected one {kind} {name}, found {len(matches)}"
        return matches[0]


def load_values_file(name: str) -> dict:
    """Parse a values file with Helm's YAML rules (not PyYAML's), as `helm -f` does."""
    return helm.values_from_yaml((CHART / name).read_text())


def render(chart: helm.Chart, overrides: dict) -> list[dict]:
    """Every object the release would create, parsed; raises HelmError when rendering fails."""
    files = chart.render(overrides, name=RELEASE, namespace=NAMESPACE)
    manifests = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


