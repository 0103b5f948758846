"""Batch figures kept by the store listener, against a brute-force recomputation from what was recorded."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config import FiguresSettings
from edge.quality import BatchFigures, batch_summary, current_summary, window_summary
from edge.quality.summary import Figures
from edge.quality.tracker import pareto_label
from edge.store import NewVerdict, NotFoundError, PartContext, VerdictStore

STATION = "st-1"
LABELS = ["crack", "blowhole", "anomalous", None, "fray"]


@dataclass
class Inspection:
    verdict_ids: list[int]
    overall: str
    verdicts: dict[str, tuple[int, str, str | None]]  # modality -> (id, decision, label)
    at: str


@dataclass
class Part:
    batch: int
    inspections: list[Inspection] = field(default_factory=list)


@dataclass
class Model:
    """What the test did, in order: the ground truth the figures must match."""

    parts: dict[int, Part] = field(default_factory=dict)
    verdict_part: dict[int, int] = field(default_factory=dict)
    verdict_decision: dict[int, str] = field(default_factory=dict)
    # (verdict, decision, label, changed the decision)
    overrides: list[tuple[int, str, str | None, bool]] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    alarms: Counter[int] = field(default_factory=Counter)
    models: dict[int, str] = field(default_factory=dict)

    def expected(self, batch: int) -> dict[str, object]:
        parts = {pid: p for pid, p in self.parts.items() if p.batch == batch}
        counts: Counter[str] = Counter()
        pareto: Counter[str] = Counter()
        modal: Counter[str] = Counter()
        models: Counter[str] = Counter()
        stamps: list[str] = []
        for pid, part in parts.items():
            latest = part.inspections[-1]
            on_part = [o for o in self.overrides if self.verdict_part[o[0]] == pid]
            applying = [o for o in on_part if o[0] >= latest.verdict_ids[0]]
            decision = applying[-1][1] if applying else latest.overall
            counts["parts"] += 1
            counts[decision.lower()] += 1
            changed = any(o[3] for o in on_part)
            counts["overridden_parts"] += changed
            counts["first_pass_ok"] += part.inspections[0].overall == "OK" and not changed
            counts["reinspected_parts"] += len(part.inspections) > 1
            counts["inspections"] += len(part.inspections)
            counts["verdicts"] += sum(len(i.verdict_ids) for i in part.inspections)
            counts["overrides"] += sum(o[3] for o in on_part)
            counts["confirmations"] += sum(not o[3] for o in on_part)
            counts["late_answers"] += sum(1 for v in self.late if self.verdict_part[v] == pid)
            if decision == "NG":
                labels = [o[2] for o in applying if o[2]]
                model_label = next((lab for _, d, lab in latest.verdicts.values() if d == "NG"), None)
                pareto[pareto_label(labels[-1] if labels else model_label)] += 1
            for modality, (vid, d, _) in latest.verdicts.items():
                on_verdict = [o for o in self.overrides if o[0] == vid]
                modal[f"{modality}:parts"] += 1
                modal[f"{modality}:{(on_verdict[-1][1] if on_verdict else d).lower()}"] += 1
            for inspection in part.inspections:
                stamps.append(inspection.at)
                for modality, (vid, _, _) in inspection.verdicts.items():
                    modal[f"{modality}:verdicts"] += 1
                    models[self.models[vid]] += 1
        counts["alarms"] = self.alarms[batch]
        return {**counts, "pareto": dict(pareto), "modal": dict(modal), "models": dict(models),
                "first_at": min(stamps, default=None), "last_at": max(stamps, default=None)}


def observed(figures: Figures) -> dict[str, object]:
    result: dict[str, object] = {name: getattr(figures, name) for name in (
        "parts", "ok", "ng", "invalid", "first_pass_ok", "overridden_parts", "reinspected_parts", "inspections",
        "verdicts", "overrides", "confirmations", "late_answers", "alarms", "first_at", "last_at")}
    result["pareto"] = {item.label: item.count for item in figures.pareto}
    modal = {}
    for m in figures.modalities:
        for name in ("parts", "ok", "ng", "invalid", "verdicts"):
            if getattr(m, name):
                modal[f"{m.modality}:{name}"] = getattr(m, name)
    result["modal"] = modal
    result["models"] = {f"{m.model_name}@{m.model_version}": m.verdicts for m in figures.models}
    return result


def normalised(expected: dict[str, object]) -> dict[str, object]:
    keys = ("parts", "ok", "ng", "invalid", "first_pass_ok", "overridden_parts", "reinspected_parts", "inspections",
            "verdicts", "overrides", "confirmations", "late_answers", "alarms", "first_at", "last_at", "pareto",
            "modal", "models")
    return {k: expected.get(k, 0) for k in keys}


@pytest.fixture
def store(tmp_path: Path) -> VerdictStore:
    store = VerdictStore(tmp_path / "verdicts.db", sync="normal")
    store.add_listener(BatchFigures(FiguresSettings()))
    store.start()
    yield store
    store.close()


def run_sequence(store: VerdictStore, rng: random.Random, steps: int) -> tuple[Model, list[int]]:
    model = Model()
    batches: list[int] = []
    open_batch: int | None = None
    serials = [f"SN-{n}" for n in range(25)]
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.03:
            if open_batch is not None:
                store.close_batch(open_batch, "op").result()
                open_batch = None
            else:
                open_batch = store.open_batch(f"LOT-{len(batches)}", STATION, "op").result().id
                batches.append(open_batch)
        elif roll < 0.72:
            serial = rng.choice(serials)
            modalities = ["vision", "acoustic"] if hash(serial) % 3 == 0 else ["vision"]
            news = []
            for modality in modalities:
                decision = rng.choices(["OK", "NG", "INVALID"], [0.75, 0.2, 0.05])[0]
                label = rng.choice(LABELS) if decision == "NG" else "good"
                version = rng.choice([1, 2])
                news.append(NewVerdict(modality, decision, label or "", rng.random() if decision != "INVALID" else None,
                                       0.8, f"{modality}-model", version, 3.0))
            decisions = [v.decision for v in news]
            overall = "NG" if "NG" in decisions else "INVALID" if "INVALID" in decisions else "OK"
            stored = store.record(PartContext(STATION, "test", serial=serial), news, overall).result()
            part = model.parts.setdefault(stored.part_id, Part(stored.batch_id or 0))
            verdicts = {}
            for vid, new in zip(stored.verdict_ids, news, strict=True):
                verdicts[new.modality] = (vid, new.decision, new.label or None)
                model.verdict_part[vid] = stored.part_id
                model.verdict_decision[vid] = new.decision
                model.models[vid] = f"{new.model_name}@{new.model_version}"
            part.inspections.append(Inspection(list(stored.verdict_ids), overall, verdicts, stored.created_at))
        elif roll < 0.92 and model.verdict_part:
            verdict = rng.choice(list(model.verdict_part))
            decision = rng.choice(["OK", "NG", "INVALID"])
            label = rng.choice(["scratch", None, "crack"]) if decision == "NG" else None
            before = next((o[1] for o in reversed(model.overrides) if o[0] == verdict), model.verdict_decision[verdict])
            store.override(verdict, decision, "op", "checked", label).result()
            model.overrides.append((verdict, decision, label, decision != before))
        elif roll < 0.96 and model.verdict_part:
            verdict = rng.choice(list(model.verdict_part))
            if verdict not in model.late:
                store.mark_late(verdict, "FAILSAFE").result()
                model.late.append(verdict)
        else:
            store.raise_alarm("test", "an alarm", source=f"s{rng.random()}").result()
            model.alarms[open_batch or 0] += 1
    return model, batches


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figures_match_a_brute_force_recount(store: VerdictStore, seed: int) -> None:
    model, batches = run_sequence(store, random.Random(seed), 600)
    assert batches, "the sequence opened no batch"
    totals = Counter[str]()
    for batch in batches:
        totals.update({k: int(v) for k, v in model.expected(batch).items() if isinstance(v, int)})
    assert totals["reinspected_parts"] and totals["overrides"] and totals["confirmations"] and totals["late_answers"]
    assert totals["ng"] and totals["invalid"] and totals["overridden_parts"] < totals["parts"]
    conn = store.reader()
    for batch in batches:
        summary = batch_summary(conn, batch)
        assert observed(summary.figures) == normalised(model.expected(batch)), f"batch {batch}"
        figures = summary.figures
        if figures.parts:
            assert figures.ok + figures.ng + figures.invalid == figures.parts
            assert figures.yield_rate == pytest.approx(figures.ok / figures.parts)
            assert figures.ppm == pytest.approx(figures.ng / figures.parts * 1e6)
            assert figures.first_pass_yield == pytest.approx(figures.first_pass_ok / figures.parts)
        # the per-hour and per-shift figures add up to the batch's
        for periods in (summary.per_hour, summary.per_shift):
            assert sum(p.figures.parts for p in periods) == figures.parts
            assert sum(p.figures.ng for p in periods) == figures.ng
            assert sum(p.figures.first_pass_ok for p in periods) == figures.first_pass_ok
    # parts judged with no batch open, and the window summary over all of them
    window = window_summary(conn, 24)
    everything = [model.expected(b) for b in {*batches, 0}]
    assert window.figures.parts == sum(int(e.get("parts", 0)) for e in everything)  # type: ignore[call-overload]
    assert window.figures.ng == sum(int(e.get("ng", 0)) for e in everything)  # type: ignore[call-overload]


def test_reinspection_counts_once_and_first_pass_uses_the_first_decision(store: VerdictStore) -> None:
    batch = store.open_batch("LOT-A", STATION, "op").result().id
    ng = NewVerdict("vision", "NG", "crack", 0.9, 0.5, "m", 1, 2.0)
    ok = NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 2.0)
    store.record(PartContext(STATION, "t", serial="A"), [ng]).result()
    second = store.record(PartContext(STATION, "t", serial="A"), [ok]).result()  # re-judged: now OK
    store.record(PartContext(STATION, "t", serial="B"), [ok]).result()
    f = batch_summary(store.reader(), batch).figures
    assert (f.parts, f.ok, f.ng, f.first_pass_ok, f.reinspected_parts, f.inspections) == (2, 2, 0, 1, 1, 3)
    assert f.first_pass_yield == 0.5 and f.yield_rate == 1.0
    # the operator finds a defect on the re-judged part: effective NG with the operator's label
    store.override(second.verdict_id, "NG", "op", "seen under the lamp", "scratch").result()
    f = batch_summary(store.reader(), batch).figures
    assert (f.ok, f.ng, f.overrides, f.overridden_parts) == (1, 1, 1, 1)
    assert [(p.label, p.count) for p in f.pareto] == [("scratch", 1)]
    assert f.ppm == 500_000


def test_good_only_model_ng_counts_as_anomaly_until_labelled(store: VerdictStore) -> None:
    batch = store.open_batch("LOT-B", STATION, "op").result().id
    stored = store.record(PartContext(STATION, "t", serial="C"),
                          [NewVerdict("vision", "NG", "anomalous", 3.0, 2.0, "tile", 1, 2.0)]).result()
    assert [(p.label, p.count) for p in batch_summary(store.reader(), batch).figures.pareto] == [("anomaly", 1)]
    store.override(stored.verdict_id, "NG", "op", "labelled", "blowhole").result()  # a confirmation with a label
    f = batch_summary(store.reader(), batch).figures
    assert [(p.label, p.count) for p in f.pareto] == [("blowhole", 1)]
    assert (f.confirmations, f.overrides, f.first_pass_ok) == (1, 0, 0)


def test_unknown_batch_and_current_summary(store: VerdictStore) -> None:
    with pytest.raises(NotFoundError):
        batch_summary(store.reader(), 99)
    with pytest.raises(NotFoundError):
        batch_summary(store.reader(), 2**70)
    store.record(PartContext(STATION, "t", serial="no-batch"),
                 [NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 2.0)]).result()
    current = current_summary(store.reader(), STATION, 8)
    assert current.batch is None and current.window_hours == 8 and current.figures.parts == 1
    batch = store.open_batch("LOT-C", STATION, "op").result().id
    assert current_summary(store.reader(), STATION, 8).batch.id == batch  # type: ignore[union-attr]
    later = datetime.now(UTC) + timedelta(hours=30)
    assert window_summary(store.reader(), 8, later).figures.parts == 0


def test_shift_calendar_wraps_past_midnight() -> None:
    from edge.quality.periods import ShiftCalendar
    calendar = ShiftCalendar.from_settings(FiguresSettings(timezone="Europe/Berlin"))
    assert calendar.key("2026-12-05T05:30:00+00:00") == "s:2026-12-05/early"  # 06:30 in Berlin
    assert calendar.key("2026-12-05T04:30:00+00:00") == "s:2026-12-04/night"  # 05:30 in Berlin
    assert calendar.key("2026-12-05T13:00:00+00:00") == "s:2026-12-05/late"


def test_a_failing_figure_never_costs_a_verdict(tmp_path: Path) -> None:
    failed: list[str] = []
    figures = BatchFigures(FiguresSettings(), on_failure=lambda event, error: failed.append(event.kind))
    store = VerdictStore(tmp_path / "v.db", sync="normal")
    store.add_listener(figures)
    store.start()
    try:
        ok = NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 2.0)
        store.record(PartContext(STATION, "t", serial="A"), [ok]).result()

        def broken(conn: object, ids: object) -> None:
            store.reader()  # any work, then a bug
            raise KeyError("bug")

        figures._stored = broken  # type: ignore[method-assign]
        stored = store.record(PartContext(STATION, "t", serial="B"), [ok]).result()
        assert store.verdict(stored.verdict_id) is not None and failed == ["verdicts"] and figures.failures == 1
        assert window_summary(store.reader(), 24).figures.parts == 1  # B is missing, A intact
    finally:
        store.close()


def test_a_batch_older_than_the_figures_says_it_is_incomplete(tmp_path: Path) -> None:
    import sqlite3

    from edge.store.schema import connect
    plain = VerdictStore(tmp_path / "v.db", sync="normal")  # a store without the listener, upgraded later
    plain.start()
    batch = plain.open_batch("OLD", STATION, "op").result().id
    plain.record(PartContext(STATION, "t", serial="A"), [NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 2.0)]
                 ).result()
    plain.close()
    conn: sqlite3.Connection = connect(tmp_path / "v.db")
    conn.execute("UPDATE quality_meta SET value = ? WHERE key = 'started_at'", (datetime.now(UTC).isoformat(),))
    conn.close()
    store = VerdictStore(tmp_path / "v.db", sync="normal")
    store.add_listener(BatchFigures(FiguresSettings()))
    store.start()
    try:
        store.record(PartContext(STATION, "t", serial="B"), [NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 2.0)]
                     ).result()
        summary = batch_summary(store.reader(), batch)
        assert not summary.complete and summary.figures.parts == 1
        other = store.close_batch(batch, "op").result()
        assert other.closed_at
        fresh = store.open_batch("NEW", STATION, "op").result().id
        assert batch_summary(store.reader(), fresh).complete
    finally:
        store.close()
