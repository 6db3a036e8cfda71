"""The rules of a dataset spec, checked on records: what ingest dead-letters and the SDK rejects or flags.

One implementation for both: ingest checks the types of a record it could
not parse in bulk with ``explain`` and the rules of every parsed batch with
``check_constraints``; the SDK checks the records it is asked to predict on
with ``check_records``, which applies the same two functions to the model's
features. Each broken rule is a ``Violation`` naming the field, the rule and
the value::

    check_records([{"hour": 30, "channel": "fax"}], spec.fields)
    # {0: [Violation("hour", "max", "hour: above the maximum 23 (got 30)"),
    #      Violation("channel", "category", "channel: not one of ['web', 'pos', 'atm'] (got 'fax')")]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.specs import ARROW_TYPES, FieldSpec

Rule = Literal["undeclared", "required", "type", "min", "max", "category"]
INT64 = (-(2**63), 2**63 - 1)
RULES: tuple[Rule, ...] = ("undeclared", "required", "type", "min", "max", "category")
# The JSON values each Arrow type takes (a bool is no number here, though Python says it is an int).
_JSON_TYPES = {"string": (str,), "int64": (int,), "double": (int, float), "bool": (bool,)}


@dataclass(frozen=True)
class Violation:
    field: str
    rule: Rule
    reason: str  # "<field>: <what is wrong> (got <value>)", as ingest dead-letters it

    def __str__(self) -> str:
        return self.reason


def type_violation(name: str, arrow_type: pa.DataType, nullable: bool, value: Any) -> Violation | None:
    """Whether one JSON value fits its field: present where required, and of the field's type."""
    if value is None:
        return None if nullable else Violation(name, "required", f"{name}: required value missing or null")
    expected = _JSON_TYPES.get(str(arrow_type), (str,))
    wrong_bool = isinstance(value, bool) and bool not in expected
    if wrong_bool or not isinstance(value, expected):
        return Violation(name, "type", f"{name}: expected {arrow_type}, got {json.dumps(value, default=str)[:80]}")
    return None


def explain(document: Mapping[str, Any], schema: pa.Schema) -> Violation | None:
    """The first rule of types one record breaks: an undeclared field, a missing value, a wrong type."""
    unknown = sorted(set(document) - set(schema.names))
    if unknown:
        return Violation(unknown[0], "undeclared", f"fields not declared in the dataset spec: {unknown}")
    for spec_field in schema:
        problem = type_violation(spec_field.name, spec_field.type, spec_field.nullable, document.get(spec_field.name))
        if problem is not None:
            return problem
    return None


def check_constraints(table: pa.Table, fields: Sequence[FieldSpec], every: bool = False) -> dict[int, list[Violation]]:
    """Row -> the rules of ``fields`` it breaks (missing value, range, category): the first, or ``every`` one."""
    if not any(_may_violate(table.column(rule.name), rule) for rule in fields):
        return {}
    violations: dict[int, list[Violation]] = {}
    for field_spec in fields:
        column = table.column(field_spec.name)
        for rule, mask, reason in _rules(field_spec, column):
            mask = pc.fill_null(mask, False)
            if not pc.any(mask).as_py():
                continue
            for row in pc.indices_nonzero(mask).to_pylist():
                if every or row not in violations:
                    # A missing value is named by the reason itself, as explain names it.
                    text = reason if rule == "required" else f"{reason} (got {column[row].as_py()!r})"
                    violations.setdefault(row, []).append(Violation(field_spec.name, rule, text))
    return violations


def _rules(field_spec: FieldSpec, column: pa.ChunkedArray) -> list[tuple[Rule, pa.ChunkedArray, str]]:
    """(rule, mask of the rows that break it, what it says) for each rule the field declares."""
    name = field_spec.name
    rules: list[tuple[Rule, pa.ChunkedArray, str]] = []
    if not field_spec.null_allowed:
        rules.append(("required", pc.is_null(column), f"{name}: required value missing or null"))
    if field_spec.min is not None:
        rules.append(("min", pc.less(column, field_spec.min), f"{name}: below the minimum {field_spec.min:g}"))
    if field_spec.max is not None:
        rules.append(("max", pc.greater(column, field_spec.max), f"{name}: above the maximum {field_spec.max:g}"))
    if field_spec.categories is not None:
        allowed = pa.array(field_spec.categories, pa.string())
        outside = pc.and_(pc.invert(pc.is_in(column, value_set=allowed)), pc.is_valid(column))
        rules.append(("category", outside, f"{name}: not one of {field_spec.categories}"))
    return rules


def _may_violate(column: pa.ChunkedArray, rule: FieldSpec) -> bool:
    """Whether a value of ``column`` may break its field's rules, found without a mask per rule.

    numpy, not Arrow compute, for the bounds: each compute call costs about
    20 µs, more than the whole reduction over a chunk. NaN is skipped, and
    an integer meets a float bound as a double, as in check_constraints.
    """
    if column.null_count and not rule.null_allowed:
        return True
    if rule.min is not None or rule.max is not None:
        values = (column.drop_null() if column.null_count else column).to_numpy()
        if len(values) and rule.min is not None and np.fmin.reduce(values) < rule.min:
            return True
        if len(values) and rule.max is not None and np.fmax.reduce(values) > rule.max:
            return True
    if rule.categories is not None:
        return not set(column.unique().drop_null().to_pylist()) <= set(rule.categories)
    return False


def check_records(records: Sequence[Mapping[str, Any]], fields: Sequence[FieldSpec]) -> dict[int, list[Violation]]:
    """Record index -> every rule of ``fields`` it breaks, for records as an application has them.

    Keys a record has beyond ``fields`` are not looked at: an application may
    pass its key or label along. Values are taken as JSON values, since that
    is what ingest checks: numpy scalars are numbers, NaN is a missing value
    (as data frames spell it), and a float with no fraction meets an int
    field as that integer (numbers come as FP64 tensors through the inference
    protocol, and as float64 in a data frame with gaps). A column whose
    values all have the field's Python type is checked without a Python step
    per value; only other columns are looked at value by value.
    """
    found: dict[int, list[Violation]] = {}
    columns = {}
    for spec in fields:
        columns[spec.name], problems = _column([record.get(spec.name) for record in records], spec)
        for index, problem in problems.items():
            found.setdefault(index, []).append(problem)
    for index, violations in check_constraints(pa.table(columns), fields, every=True).items():
        reported = {problem.field for problem in found.get(index, [])}
        found.setdefault(index, []).extend(v for v in violations if v.field not in reported)
    return dict(sorted(found.items()))


_PLAIN_TYPES = {"float": {float, int}, "int": {int}, "bool": {bool}, "string": {str}, "category": {str}}


def _column(values: list[Any], spec: FieldSpec) -> tuple[pa.Array, dict[int, Violation]]:
    """The column's values as Arrow (a value of the wrong type as null), and the type problems by index."""
    arrow_type = ARROW_TYPES[spec.type]
    kinds = set(map(type, values)) - {type(None)}
    if kinds <= _PLAIN_TYPES[spec.type]:
        try:
            return pa.array(values, arrow_type, from_pandas=True), {}  # from_pandas: NaN is null
        except (OverflowError, pa.ArrowInvalid):
            pass  # an int beyond 64 bits: named below
    problems = {}
    plain = []
    for index, value in enumerate(values):
        value = _json_value(value, spec)
        problem = type_violation(spec.name, arrow_type, True, value)
        if problem is None and spec.type == "int" and value is not None and not INT64[0] <= value <= INT64[1]:
            problem = Violation(spec.name, "type", f"{spec.name}: expected int64, got {value} (out of range)")
        if problem is not None:
            problems[index] = problem
            value = None  # reported already; the column's other rules see a gap
        plain.append(value)
    return pa.array(plain, arrow_type), problems


def _json_value(value: Any, spec: FieldSpec) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if spec.type == "int" and value.is_integer():
            return int(value)
    return value
