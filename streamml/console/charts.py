"""The console's charts, as Plotly figures (``{"data": [...], "layout": {...}}``) that the page draws.

The browser draws them with the plotly.min.js the ``plotly`` package ships,
served by the console itself; this module only says what to draw. Each
function takes plain values, so it is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

Figure = dict[str, Any]
CHAMPION_COLOUR = "#2e7d32"
OTHER_COLOUR = "#90a4ae"
THRESHOLD_COLOUR = "#c62828"
EVENT_COLOUR = "#ef6c00"
CHANGE_COLOUR = "#2e7d32"


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "margin": {"l": 50, "r": 20, "t": 40, "b": 60},
        "height": 280,
        "legend": {"orientation": "h", "y": -0.3},
        "hovermode": "closest",
        **extra,
    }


def version_metrics(versions: Sequence[str], metrics: dict[str, list[float | None]], champion: str | None,
                    metric: str) -> Figure:
    """One metric of every version as bars, the champion's in green."""
    colours = [CHAMPION_COLOUR if version == champion else OTHER_COLOUR for version in versions]
    return {
        "data": [{"type": "bar", "x": list(versions), "y": metrics[metric], "name": metric,
                  "marker": {"color": colours}}],
        "layout": _layout(f"{metric} per version (champion in green)",
                          xaxis={"type": "category", "tickangle": -30}),
    }


def training_history(history: list[dict[str, Any]]) -> Figure:
    """Train loss and validation metrics per epoch, from a model card."""
    epochs = [row["epoch"] for row in history]
    data = [{"type": "scatter", "mode": "lines+markers", "x": epochs, "y": [row["train_loss"] for row in history],
             "name": "train loss"}]
    names = sorted({name for row in history for name in row.get("metrics", {})})
    data += [{"type": "scatter", "mode": "lines+markers", "x": epochs,
              "y": [row.get("metrics", {}).get(name) for row in history], "name": f"validation {name}"}
             for name in names]
    return {"data": data, "layout": _layout("training per epoch", xaxis={"title": {"text": "epoch"}})}


def reference_distribution(feature: str, labels: list[str], shares: list[float]) -> Figure:
    """A feature's share of train rows per category (or per bin, for a numeric feature with no sample)."""
    return {
        "data": [{"type": "bar", "x": labels, "y": shares, "name": feature, "marker": {"color": "#1565c0"}}],
        "layout": _layout(f"{feature}: share of train rows", yaxis={"tickformat": ".0%"},
                          xaxis={"type": "category", "tickangle": -30}),
    }


def reference_histogram(feature: str, sample: list[float], count: int) -> Figure:
    """A numeric feature's train distribution, from the uniform sample the reference keeps (Plotly bins it)."""
    return {
        "data": [{"type": "histogram", "x": sample, "histnorm": "probability", "nbinsx": 30, "name": feature,
                  "marker": {"color": "#1565c0"}}],
        "layout": _layout(f"{feature}: train distribution ({len(sample):,} of {count:,} rows sampled)",
                          yaxis={"tickformat": ".0%", "title": {"text": "share"}}, bargap=0.02),
    }


def rows_per_version(versions: list[str], rows: dict[str, list[int]]) -> Figure:
    """Rows per split of each dataset version, stacked."""
    return {
        "data": [{"type": "bar", "x": versions, "y": counts, "name": split} for split, counts in rows.items()],
        "layout": _layout("rows per split", barmode="stack", xaxis={"type": "category"}),
    }


def drift_series(title: str, series: dict[str, tuple[list[datetime], list[float]]],
                 thresholds: dict[str, float], events: list[tuple[datetime, str]], y_title: str,
                 changes: list[tuple[datetime, str]] = ()) -> Figure:
    """Values over windows (one line per series), a dashed line per threshold, a vertical line per event,
    and a dotted one where each new champion's windows begin."""
    data: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines+markers", "x": [t.isoformat() for t in times], "y": values, "name": name}
        for name, (times, values) in series.items()
    ]
    names_at: dict[float, list[str]] = {}
    for name, value in thresholds.items():
        names_at.setdefault(value, []).append(name)
    shapes: list[dict[str, Any]] = [
        {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": value, "y1": value,
         "line": {"color": THRESHOLD_COLOUR, "dash": "dash", "width": 1}, "name": f"threshold {', '.join(names)}"}
        for value, names in names_at.items()
    ]
    annotations: list[dict[str, Any]] = [
        {"xref": "paper", "x": 1, "xanchor": "right", "yref": "y", "y": value, "yanchor": "bottom",
         "text": f"{', '.join(names)} threshold {value:g}", "showarrow": False,
         "font": {"size": 10, "color": THRESHOLD_COLOUR}}
        for value, names in names_at.items()
    ]
    for at, label in events:
        stamp = at.isoformat()
        shapes.append({"type": "line", "xref": "x", "x0": stamp, "x1": stamp, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": EVENT_COLOUR, "width": 2}, "name": "drift.detected"})
        annotations.append({"xref": "x", "x": stamp, "yref": "paper", "y": 1, "yanchor": "bottom",
                            "text": f"drift.detected ({label})", "showarrow": False,
                            "font": {"size": 10, "color": EVENT_COLOUR}})
    for at, label in changes:
        stamp = at.isoformat()
        shapes.append({"type": "line", "xref": "x", "x0": stamp, "x1": stamp, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": CHANGE_COLOUR, "dash": "dot", "width": 1}, "name": label})
        annotations.append({"xref": "x", "x": stamp, "yref": "paper", "y": 0.92, "xanchor": "left",
                            "text": label, "showarrow": False, "font": {"size": 10, "color": CHANGE_COLOUR}})
    layout = _layout(title, shapes=shapes, annotations=annotations, yaxis={"title": {"text": y_title}},
                     xaxis={"type": "date"})
    return {"data": data, "layout": layout}


def lineage_flow(nodes: list[str], links: list[tuple[int, int, int]], colours: list[str]) -> Figure:
    """A Sankey diagram: rows flowing from topic partitions into a dataset version into a model version."""
    source, target, value = (list(column) for column in zip(*links, strict=True)) if links else ([], [], [])
    return {
        "data": [{"type": "sankey", "arrangement": "snap",
                  "node": {"label": nodes, "color": colours, "pad": 18, "thickness": 16},
                  "link": {"source": source, "target": target, "value": value}}],
        "layout": _layout("rows from the topic partitions to the model", height=max(260, 40 * len(nodes))),
    }
