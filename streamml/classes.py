"""Class labels as text, and the names of per-class metrics.

A multiclass model's classes are the label values the trainer saw: text,
integers or booleans. Everywhere a class is named (the monitor's references
and label windows, the validator's per-class metrics) it is the text Arrow
casts the value to, so ``7``, ``"7"`` and the label column of either type
name the same class: ``[0, 1, 2]`` -> ``["0", "1", "2"]``,
``[False, True]`` -> ``["false", "true"]``.

A promotion policy names a per-class metric once (``recall_per_class``); the
validator records it and the monitor watches it per class, as
``recall[<class>]``:

    per_class_name("recall_per_class", "low")   # "recall[low]"
    family("recall[low]")                       # "recall_per_class"
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# The policy's name of each per-class metric -> the prefix of its per-class values.
PER_CLASS: dict[str, str] = {"recall_per_class": "recall"}


def value_text(value: float | int | str | None) -> str | None:
    """A category or class value as its text (the text Arrow casts it to)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return pc.cast(pa.scalar(value), pa.string()).as_py()
    return str(value)


def class_texts(classes: list | tuple) -> list[str]:
    """A multiclass model's classes (label values: text, integers or booleans) as text; distinct."""
    if any(not isinstance(value, (str, int, float)) for value in classes):
        raise ValueError(f"classes must be text, integers or booleans, got {list(classes)[:10]}")
    text = [value_text(value) for value in classes]
    if len(set(text)) != len(text):
        raise ValueError(f"classes {list(classes)[:10]} are not distinct as text {text[:10]}")
    return text


def per_class_name(metric: str, class_text: str) -> str:
    """The name of ``metric`` (a key of ``PER_CLASS``) on one class."""
    return f"{PER_CLASS[metric]}[{class_text}]"


def family(name: str) -> str:
    """The metric a name belongs to: ``recall[low]`` -> ``recall_per_class``; other names are their own."""
    for metric, prefix in PER_CLASS.items():
        if name.startswith(prefix + "[") and name.endswith("]"):
            return metric
    return name


def class_of(name: str) -> str:
    """The class a per-class metric name is about: ``recall[low]`` -> ``low``."""
    if family(name) == name:
        raise ValueError(f"{name!r} is not a per-class metric name like recall[<class>]")
    return name[name.index("[") + 1:-1]


def members(metric: str, names: list[str] | dict) -> list[str]:
    """The names among ``names`` that belong to ``metric``: its per-class names, or itself when present."""
    return [name for name in names if family(name) == metric and (metric in PER_CLASS or name == metric)]
