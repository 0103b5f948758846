"""SPC arithmetic and rules on constructed series, and the drift alarm of a running station."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from support import write_station_config

from edge.config import SpcSettings, load_config
from edge.quality import batch_charts
from edge.quality.service import ALARM_KIND, drifting
from edge.quality.spc import imr_limits, p_bar_of, p_limits, rule_violations, standardized, upper_capability
from edge.station import Station
from edge.store import NewVerdict, PartContext


def broken(values: list[float], rule: int) -> list[int]:
    """Indexes of the points at which ``rule`` fires, on a chart with centre 0 and sigma 1."""
    return [i for i, rules in enumerate(rule_violations(values, 0.0, 1.0)) if rule in rules]


def test_rule_1_one_point_beyond_three_sigma() -> None:
    assert broken([0.1, -0.2, 3.2, 0.0, -3.01, 2.99], 1) == [2, 4]


def test_rule_2_two_of_three_beyond_two_sigma_on_one_side() -> None:
    assert broken([0.0, 2.5, 0.3, 2.1], 2) == [3]
    assert broken([0.0, 2.5, -2.5, 0.1], 2) == []  # opposite sides
    assert broken([2.5, 0.0, 0.0, 2.5], 2) == []  # 2 of 4, not of 3


def test_rule_3_four_of_five_beyond_one_sigma_on_one_side() -> None:
    assert broken([-1.5, -1.2, 0.0, -1.1, -1.9], 3) == [4]
    assert broken([1.5, 1.2, 0.0, 0.5, 1.9], 3) == []


def test_rule_4_eight_in_a_row_on_one_side() -> None:
    values = [0.2, 0.1, 0.4, 0.3, 0.2, 0.5, 0.1, 0.3, 0.2]
    assert broken(values, 4) == [7, 8]
    assert broken([0.2] * 7 + [-0.1], 4) == []


def test_rule_5_six_rising() -> None:
    assert broken([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], 5) == [5]
    assert broken([0.0, 0.1, 0.2, 0.2, 0.4, 0.5], 5) == []


def test_imr_limits_from_moving_ranges_and_a_trimmed_baseline() -> None:
    limits = imr_limits([1.0, 2.0, 1.0, 2.0, 1.0])
    assert limits is not None
    assert limits.center == pytest.approx(1.4) and limits.mr_bar == pytest.approx(1.0)
    assert limits.sigma == pytest.approx(1 / 1.128) and limits.mr_ucl == pytest.approx(3.267)
    rng = random.Random(4)
    base = [rng.gauss(1.0, 0.1) for _ in range(200)]
    clean = imr_limits(base)
    dirty = imr_limits([*base[:100], 9.0, *base[100:]])  # one defect in the baseline
    assert clean is not None and dirty is not None
    assert dirty.center == pytest.approx(clean.center, abs=0.01)
    assert dirty.sigma < clean.sigma * 1.1  # the defect's two moving ranges would have widened it by half
    assert imr_limits([1.0]) is None


def test_p_chart_limits_narrow_with_subgroup_size() -> None:
    p_bar = p_bar_of([(50, 2), (50, 3), (100, 5)])
    assert p_bar == pytest.approx(0.05)
    small, large = p_limits(0.05, [(50, 10), (200, 10)])
    assert small.ucl == pytest.approx(0.05 + 3 * (0.05 * 0.95 / 50) ** 0.5)
    assert large.ucl < small.ucl and small.lcl == 0.0
    assert standardized(0.05, small) > 3  # 20 % NG in 50 parts is beyond the limit
    assert standardized(0.0, p_limits(0.0, [(50, 1)])[0]) > 3  # no NG in the baseline: any NG is a signal


def test_capability_against_an_upper_limit_only() -> None:
    capability = upper_capability([1.0, 2.0, 1.0, 2.0, 1.0], 5.0)
    assert capability is not None and capability.cp is None
    assert capability.cpk == pytest.approx((5.0 - 1.4) / (3 / 1.128))


def test_drift_means_a_run_rule_or_a_spike_still_judged_ok() -> None:
    assert drifting((4,), "NG") and drifting((1,), "OK")
    assert not drifting((1,), "NG") and not drifting((), "OK")


@pytest.fixture
def spc_station(tmp_path: Path) -> Station:
    config = write_station_config(tmp_path, figures={"spc": {"baseline_points": 30, "check_interval_s": 0.1,
                                                             "subgroup_parts": 10, "baseline_subgroups": 3}})
    station = Station(load_config(config))
    station.start(with_sources=False)
    yield station
    station.stop()


def record(station: Station, serial: str, score: float, threshold: float = 2.0) -> None:
    assert station.store is not None
    decision = "NG" if score >= threshold else "OK"
    station.store.record(PartContext(station.id, "test", serial=serial),
                         [NewVerdict("vision", decision, "good" if decision == "OK" else "defect", score, threshold,
                                     "bright-spot", 1, 1.0)]).result()


def wait_for_alarm(station: Station, timeout_s: float = 30.0, containing: str = "") -> list[str]:
    assert station.store is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        messages = [a.message for a in station.store.alarms() if a.kind == ALARM_KIND and containing in a.message]
        if messages:
            return messages
        time.sleep(0.05)
    return []


def test_scores_creeping_up_raise_an_alarm_before_parts_fail(spc_station: Station) -> None:
    assert spc_station.store is not None
    spc_station.store.open_batch("LOT-SPC", spc_station.id, "op").result()
    rng = random.Random(7)
    in_control = [1.00, 1.04, 0.97, 1.02, 0.98, 1.01, 0.96, 1.03]  # no run, nothing beyond one sigma
    for n in range(30):
        record(spc_station, f"B{n}", in_control[n % len(in_control)])
    time.sleep(0.3)
    assert wait_for_alarm(spc_station, 0.5) == []  # in control: no alarm
    for n in range(9):  # still far below the threshold (2.0): every part passes
        record(spc_station, f"D{n}", 1.12 + rng.gauss(0, 0.01))
    messages = wait_for_alarm(spc_station)
    assert messages and "drift" in messages[0] and "rule" in messages[0]
    charts = batch_charts(spc_station.store.reader(), 1, SpcSettings(baseline_points=30))
    assert all(p.decision == "OK" for p in charts.scores[0].points)
    assert any(p.rules for p in charts.scores[0].points[-9:])


def test_ng_rate_out_of_control_raises_an_alarm(spc_station: Station) -> None:
    assert spc_station.store is not None
    spc_station.store.open_batch("LOT-P", spc_station.id, "op").result()
    for n in range(30):  # three baseline subgroups of 10 parts, 1 NG each
        record(spc_station, f"P{n}", 3.0 if n % 10 == 0 else 1.0 + 0.01 * (n % 3))
    for n in range(10):  # then 6 NG in 10
        record(spc_station, f"Q{n}", 3.0 if n < 6 else 1.0)
    messages = wait_for_alarm(spc_station, containing="NG rate")
    assert messages and "parts 31..40" in messages[0]


class Manifests:
    """A manifest source with fixed calibration figures."""

    def __init__(self, median: float, reject: float) -> None:
        self.metrics = {"calibration_good_score_median": median, "calibration_false_reject_rate": reject}

    def manifest(self, name: str, version: int | None = None) -> object:
        return type("M", (), {"metrics": self.metrics})()


def test_model_drift_against_the_calibration(tmp_path: Path) -> None:
    from edge.config import FiguresSettings
    from edge.quality import BatchFigures
    from edge.quality.drift import model_drift
    from edge.store import VerdictStore
    store = VerdictStore(tmp_path / "v.db", sync="normal")
    store.add_listener(BatchFigures(FiguresSettings()))
    store.start()
    try:
        for n in range(60):
            score = 1.5 + 0.01 * (n % 7)  # good parts scoring ~1.5 where calibration saw 1.0
            store.record(PartContext("st", "t", serial=f"G{n}"),
                         [NewVerdict("vision", "OK", "good", score, 2.0, "tile", 3, 1.0)]).result()
        drift = model_drift(store.reader(), Manifests(1.0, 0.05), 24, 0.25)  # type: ignore[arg-type]
        assert [(d.model_name, d.model_version, d.status) for d in drift] == [("tile", 3, "drift")]
        assert drift[0].good_parts == 60 and drift[0].median_ratio == pytest.approx(1.53, abs=0.01)
        steady = model_drift(store.reader(), Manifests(1.5, 0.05), 24, 0.25)  # type: ignore[arg-type]
        assert steady[0].status == "ok" and not steady[0].reasons
        assert model_drift(store.reader(), None, 24, 0.25)[0].status == "unknown"
    finally:
        store.close()



@pytest.mark.parametrize("scope", ["batch", "recipe", "model"])
def test_baseline_scope(tmp_path: Path, scope: str) -> None:
    from edge.config import FiguresSettings
    from edge.quality import BatchFigures
    from edge.store import VerdictStore
    store = VerdictStore(tmp_path / "v.db", sync="normal")
    store.add_listener(BatchFigures(FiguresSettings()))
    store.start()
    try:
        for batch_no, (recipe, level) in enumerate([("r2", 2.0), ("r1", 1.0), ("r1", 3.0)]):
            batch = store.open_batch(f"L{batch_no}", "st", "op").result().id
            for n in range(12):
                store.record(PartContext("st", "t", serial=f"{batch_no}-{n}"),
                             [NewVerdict("vision", "OK", "good", level + 0.01 * (n % 3), 9.0, "tile", 1, 1.0,
                                         recipe=recipe)]).result()
            store.close_batch(batch, "op").result()
        charts = batch_charts(store.reader(), 3, SpcSettings(baseline_points=10, baseline_scope=scope))  # type: ignore[arg-type]
        center = charts.scores[0].limits.center  # type: ignore[union-attr]
        assert center == pytest.approx({"batch": 3.0, "recipe": 1.0, "model": 2.0}[scope], abs=0.02)
    finally:
        store.close()
