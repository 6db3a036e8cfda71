"""Inputs checked against the dataset spec, with the code ingest checks records with (``streamml.checks``).

A model version's card names the dataset version it was trained on; that
version's manifest records the fingerprint of the spec prep built it with;
ingest stores each spec it enforces under its fingerprint. So a version's
rules come with it, and they are the ones its training data passed::

    rules = input_rules(store, card, transform.features)   # None, with the reason logged, if not stored
    rules.check([{"hour": 30}])   # {0: [Violation("hour", "max", "hour: above the maximum 23 (got 30)")]}

What a client does with a broken rule is its ``input_checks``: ``reject``
(``InputRejected``, a 400 from the inference server), ``flag`` (predict,
count it and mark the logged prediction), or ``off``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from streamml.checks import Violation, check_records
from streamml.registry.datasets import manifest_at, read_spec
from streamml.registry.keys import RegistryError
from streamml.specs import FieldSpec
from streamml.store import ObjectNotFound, ReadableStore

log = logging.getLogger("streamml.sdk.input_checks")

InputChecks = Literal["reject", "flag", "off"]
INPUT_CHECKS: tuple[str, ...] = get_args(InputChecks)


class InputRejected(ValueError):
    """Records that break the dataset spec's rules, with ``input_checks="reject"``; the text names each."""


@dataclass(frozen=True)
class InputRules:
    dataset: str
    fields: tuple[FieldSpec, ...]  # the model's features, as the spec declares them

    def check(self, records: Sequence[Mapping[str, Any]]) -> dict[int, list[Violation]]:
        if not self.fields or not all(isinstance(record, Mapping) for record in records):
            return {}  # a record that is no mapping is refused by the transform, which names it
        return check_records(records, self.fields)


def flag_names(violations: Sequence[Violation]) -> list[str]:
    """``feature:rule`` for each broken rule, as a logged prediction's ``flags`` lists them."""
    return [f"{violation.field}:{violation.rule}" for violation in violations]


def rejection(found: Mapping[int, Sequence[Violation]], dataset: str) -> InputRejected:
    index, violations = next(iter(found.items()))
    more = f"; {len(found) - 1} more records break them too" if len(found) > 1 else ""
    return InputRejected(f"record {index} breaks the rules of dataset {dataset!r}: "
                         f"{'; '.join(map(str, violations))}{more}")


def input_rules(store: ReadableStore, card: Mapping[str, Any], features: Sequence[str]) -> InputRules | None:
    """The rules of the dataset spec ``card``'s training data was built with; None (logged) when not stored.

    An outage of the store is raised, as for the rest of a version."""
    dataset = card.get("dataset")
    key = dataset.get("manifest_key") if isinstance(dataset, Mapping) else None
    where = f"model {card.get('model')!r} version {card.get('version')!r}"
    if not isinstance(key, str):
        log.warning(f"{where}: its card names no dataset manifest; its inputs are not checked")
        return None
    try:
        manifest = manifest_at(store, key)
        spec = read_spec(store, manifest.dataset, manifest.spec_fingerprint)
    except (ObjectNotFound, RegistryError) as error:
        log.warning(f"{where}: the dataset spec cannot be read ({error}); its inputs are not checked")
        return None
    if spec is None:
        log.warning(f"{where}: no spec of dataset {manifest.dataset!r} with fingerprint {manifest.spec_fingerprint} "
                    "is stored (ingest stores the specs it enforces when it starts); its inputs are not checked")
        return None
    wanted = set(features)
    return InputRules(spec.name, tuple(field for field in spec.features
                                       if field.name in wanted and field.type != "timestamp"))
