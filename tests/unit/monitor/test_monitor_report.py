import numpy as np
import pytest
from rich.console import Console

from services.monitor.drift import MonitorThresholds, WindowReport, evaluate_window
from services.monitor.report import bins_table, print_report, save_png, window_table
from services.monitor.synthetic import traffic, training_reference
from services.monitor.windows import WindowAccumulator, WindowSpec, column_for

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def report() -> WindowReport:
    reference, _ = training_reference(seed=4, rows=30_000)
    data = traffic(np.random.default_rng(5), 5_000, shift=0.8)
    columns = {name: column_for(ref) for name, ref in reference.features.items()}
    columns["prediction"] = column_for(reference.prediction)
    windows = WindowAccumulator(columns, WindowSpec(size=5_000))
    (window,) = windows.add({**data.features, "prediction": data.outputs}, np.arange(5_000.0))
    return evaluate_window(window, reference, MonitorThresholds())


def rendered(renderable) -> str:
    console = Console(record=True, width=160)
    console.print(renderable)
    return console.export_text()


def test_table_lists_every_column_and_test_with_the_verdict(report):
    text = rendered(window_table(report))
    for column in ("amount", "hour", "channel", "country", "prediction"):
        assert column in text
    score_a = next(line for line in text.splitlines() if "score_a" in line)
    assert "psi" in score_a and "high" in score_a
    assert "fraud: window 0, 5000 predictions" in text


def test_bins_table_shows_reference_and_live_shares(report):
    score_a = next(column for column in report.features if column.column == "score_a")
    text = rendered(bins_table(score_a))
    assert text.count("10.0%") >= 9  # reference deciles
    assert f"{score_a.live[-1]:.1%}" in text


def test_print_report_adds_bins_of_drifted_columns_only(report):
    console = Console(record=True, width=160)
    print_report(report, console=console)
    text = console.export_text()
    assert "score_a: share per bin" in text and "amount: share per bin" not in text


def test_png_has_a_panel_per_column(report, tmp_path):
    path = save_png(report, tmp_path / "drift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not in the report"):
        save_png(report, tmp_path / "x.png", columns=["nope"])


def test_reports_survive_a_json_round_trip(report):
    assert WindowReport.model_validate_json(report.model_dump_json()) == report
