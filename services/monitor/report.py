"""A window-versus-reference report for people: a rich table and an optional PNG.

Backs ``streamml drift report MODEL``: the monitor keeps its last reports
(``WindowReport``/``PerformanceReport``, plain JSON), and these functions
render them::

    console.print(window_table(report))
    console.print(bins_table(report.features[0]))
    save_png(report, Path("fraud-drift.png"))     # needs matplotlib
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from services.monitor.drift import ColumnReport, PerformanceReport, WindowReport

SEVERITY_STYLE = {"low": "yellow", "medium": "dark_orange", "high": "bold red"}


def window_table(report: WindowReport) -> Table:
    """One row per column and test: statistic, corrected p-value, effect size, verdict."""
    title = (
        f"{report.model}: window {report.index}, {report.count} predictions, "
        f"{report.start:%Y-%m-%d %H:%M:%S} to {report.end:%H:%M:%S} UTC"
    )
    table = Table(title=title, caption=report.note)
    for name, justify in (
        ("column", "left"),
        ("kind", "left"),
        ("test", "left"),
        ("statistic", "right"),
        ("p adj.", "right"),
        ("effect", "right"),
        ("missing", "right"),
        ("drift", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    columns = [*report.features, *([report.prediction] if report.prediction is not None else [])]
    for column in columns:
        for position, test in enumerate(column.tests):
            verdict = f"[{SEVERITY_STYLE[test.severity]}]{test.severity}[/]" if test.drifted else "-"
            table.add_row(
                column.column if position == 0 else "",
                column.kind if position == 0 else "",
                test.test,
                f"{test.statistic:.4g}",
                f"{test.p_adjusted:.2g}",
                f"{test.effect_size:.3f}",
                f"{column.missing}" if position == 0 else "",
                verdict,
            )
    return table


def bins_table(column: ColumnReport) -> Table:
    """Live against reference share per bin of one column."""
    table = Table(title=f"{column.column}: share per bin")
    table.add_column("bin")
    table.add_column("reference", justify="right")
    table.add_column("live", justify="right")
    table.add_column("change", justify="right")
    for name, reference, live in zip(column.bins, column.reference, column.live, strict=True):
        change = live - reference
        style = "red" if abs(change) >= 0.05 else ""
        table.add_row(
            name, f"{reference:.1%}", f"{live:.1%}", f"[{style}]{change:+.1%}[/]" if style else f"{change:+.1%}"
        )
    return table


def performance_table(reports: Iterable[PerformanceReport]) -> Table:
    table = Table(title="performance on labelled predictions")
    for name in ("window", "labels", "metric", "live", "baseline", "decay", "p", "alarms", "drift"):
        table.add_column(name)
    for report in reports:
        table.add_row(
            str(report.index),
            str(report.count),
            report.metric,
            _number(report.value),
            _number(report.baseline),
            "-" if report.decay is None else f"{report.decay:+.1%}",
            _number(report.p_value, "{:.2g}"),
            str(len(report.alarms)),
            # The window's drift, unless only another metric drifted: that one's row shows it.
            _severity(report.metric_drift or any(alarm.drifted for alarm in report.alarms), report.severity),
        )
        for check in report.others:  # the other metrics the promotion policy names
            table.add_row(
                "", "", check.metric, _number(check.value), _number(check.baseline),
                "-" if check.decay is None else f"{check.decay:+.1%}", _number(check.p_value, "{:.2g}"), "",
                _severity(check.drifted, check.severity),
            )
    return table


def _severity(drifted: bool, severity: str | None) -> str:
    return f"[{SEVERITY_STYLE[severity]}]{severity}[/]" if drifted and severity else "-"


def print_report(
    report: WindowReport, performance: Iterable[PerformanceReport] = (), console: Console | None = None
) -> None:
    """The table, the bins of every drifted column, then recent performance windows."""
    console = console or Console()
    parts = [window_table(report)]
    columns = [*report.features, *([report.prediction] if report.prediction is not None else [])]
    parts += [bins_table(column) for column in columns if column.drifted]
    performance = list(performance)
    if performance:
        parts.append(performance_table(performance))
    console.print(Group(*parts))


def _number(value: float | None, form: str = "{:.4f}") -> str:
    return "-" if value is None else form.format(value)


def save_png(report: WindowReport, path: Path, columns: list[str] | None = None) -> Path:
    """Bar charts of reference against live share per bin, drifted columns first."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    chosen = [*report.features, *([report.prediction] if report.prediction is not None else [])]
    if columns is not None:
        unknown = sorted(set(columns) - {column.column for column in chosen})
        if unknown:
            raise ValueError(f"columns {unknown} are not in the report; it has {[c.column for c in chosen]}")
        chosen = [column for column in chosen if column.column in columns]
    if not chosen:
        raise ValueError(f"window {report.index} has no judged columns to plot ({report.note})")
    chosen.sort(key=lambda column: not column.drifted)
    per_row = 3
    rows = -(-len(chosen) // per_row)
    figure, axes = plt.subplots(rows, per_row, figsize=(5 * per_row, 3.2 * rows), squeeze=False)
    for axis in axes.flat[len(chosen) :]:
        axis.set_visible(False)
    for axis, column in zip(axes.flat, chosen, strict=False):
        positions = range(len(column.bins))
        axis.bar([p - 0.2 for p in positions], column.reference, width=0.4, label="reference", color="#8da0cb")
        axis.bar([p + 0.2 for p in positions], column.live, width=0.4, label="live", color="#fc8d62")
        axis.set_xticks(list(positions), column.bins, rotation=60, ha="right", fontsize=7)
        tests = ", ".join(
            f"{t.test} {t.effect_size:.3f}" if t.test == t.effect else f"{t.test} ({t.effect} {t.effect_size:.3f})"
            for t in column.tests
        )
        flag = f" DRIFT ({column.severity})" if column.drifted else ""
        axis.set_title(f"{column.column}{flag}\n{tests}", fontsize=9, color="firebrick" if column.drifted else "black")
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"{report.model} window {report.index} ({report.count} predictions) vs reference")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
