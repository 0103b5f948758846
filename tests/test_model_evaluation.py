"""Honest figures (models.evaluation) and ``edge-inspect models evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import write_station_config
from test_service_live import run_cli

from models.evaluation import (
    Target,
    auroc,
    auroc_interval,
    best_miss_at,
    beta_quantile,
    choose_operating_point,
    exceedance,
    grouped_folds,
    number_runs,
    photo_groups,
    threshold_for_false_reject,
    threshold_for_miss,
    wilson_interval,
)


def test_wilson_interval_matches_the_textbook_and_never_leaves_zero_to_one() -> None:
    low, high = wilson_interval(3, 100)
    assert low == pytest.approx(0.01025, abs=1e-4) and high == pytest.approx(0.0845, abs=1e-4)
    assert wilson_interval(0, 16) == (0.0, pytest.approx(0.1936, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_auroc_counts_ties_half_and_the_grouped_interval_is_wider_than_per_file() -> None:
    assert auroc([0, 1, 2], [2, 3]) == pytest.approx((1 + 1 + 0.5 + 1 + 1 + 1) / 6)
    rng = np.random.default_rng(0)
    parts = rng.normal(size=20)  # six photos of each good part: they agree with each other
    good = np.repeat(parts, 6) + rng.normal(scale=0.05, size=120)
    bad = rng.normal(loc=1.0, size=300)
    per_file = auroc_interval(good, bad, draws=400)
    per_part = auroc_interval(good, bad, np.repeat(np.arange(20), 6), draws=400)
    assert per_part[1] - per_part[0] > 1.3 * (per_file[1] - per_file[0])
    assert per_part[0] < auroc(good, bad) < per_part[1]


def test_grouped_folds_keep_each_group_whole_and_balanced() -> None:
    groups = [g for g in range(30) for _ in range(1 + g % 4)]
    folds = grouped_folds(groups, 4, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    fold_of = {i: f for f, members in enumerate(folds) for i in members}
    for group in set(groups):
        assert len({fold_of[i] for i, g in enumerate(groups) if g == group}) == 1
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 4


def test_number_runs_group_photos_numbered_together_and_trust_them_only_when_they_tell() -> None:
    names = ["exp1_num_1000.jpg", "exp2_num_1010.jpg", "exp1_num_5000.jpg", "x.png", "exp3_num_1100.jpg"]
    assert number_runs(names) == [0, 0, 1, 2, 0]
    consecutive = [f"part_{i:04d}.png" for i in range(100)]  # one photo per part: one run, says nothing
    assert photo_groups(consecutive) is None
    tiles = [f"num_{1000 * tile + shot}.jpg" for tile in range(20) for shot in range(4)]
    assert photo_groups(tiles) == [tile for tile in range(20) for _ in range(4)]


def test_beta_quantiles_and_the_expected_exceedance_of_a_maximum() -> None:
    assert beta_quantile(1, 16, 0.975) == pytest.approx(1 - 0.025 ** (1 / 16), abs=1e-6)
    expected, (low, high) = exceedance(0, 16)
    assert expected == pytest.approx(1 / 17) and low < expected < high


def test_a_false_reject_target_is_kept_on_new_parts_from_the_same_distribution() -> None:
    rng = np.random.default_rng(3)
    for scores in (lambda size: rng.normal(2.0, 0.5, size), lambda size: rng.uniform(1.0, 2.0, size)):
        realised = []
        for _ in range(200):
            held_out, new = scores(60), scores(2000)
            point = threshold_for_false_reject(held_out, 0.05, normal_tail=True)
            assert point.supported and point.threshold <= held_out.max() * 1.001
            realised.append(float((new >= point.threshold).mean()))
        assert 0.01 < np.mean(realised) <= 0.055


def test_too_few_good_parts_say_what_they_support_and_never_pass_above_every_good_part() -> None:
    good = np.linspace(1.0, 2.0, 5)
    point = threshold_for_false_reject(good, 0.05, defects=[1.5, 3.0])
    assert not point.supported and point.threshold > good.max()
    assert point.threshold < good.max() * 1.01  # just above the highest good score, no extrapolation
    assert point.expected_false_reject == pytest.approx(1 / 6)
    assert "5 good parts cannot show a false-reject rate of 5.0%" in (point.warning or "")
    assert "19 or more" in (point.warning or "")
    assert point.expected_miss == pytest.approx(0.5) and point.defect_parts == 2


def test_one_odd_part_among_few_does_not_carry_the_threshold_above_every_defect() -> None:
    """16 good parts, one of them unlike the others: the highest score would pass nearly every defect."""
    good = np.r_[np.linspace(1.0, 2.0, 15), 8.0]
    assert threshold_for_false_reject(good, 0.05).threshold > 8.0  # distribution-free: above every good part
    point = threshold_for_false_reject(good, 0.05, defects=np.linspace(2.5, 7.5, 20), normal_tail=True)
    assert 2.0 < point.threshold < 3.0 and point.method.startswith("robust normal tail")
    assert not point.supported and "assumes a normal tail" in (point.warning or "")
    assert point.expected_false_reject == pytest.approx(1 / 16)


def test_a_miss_target_within_a_false_reject_bound() -> None:
    good, defects = np.linspace(0, 1, 100), np.linspace(0.97, 3, 200)
    point = threshold_for_miss(good, defects, 0.01, max_false_reject=0.05)
    assert point.supported and point.expected_miss is not None and point.expected_miss <= 0.01
    assert point.threshold <= defects[1] and point.expected_false_reject <= 0.05 + 1e-9
    costly = threshold_for_miss(good, np.linspace(0.2, 3, 200), 0.01, max_false_reject=0.05)
    assert not costly.supported and "keeps the bound" in (costly.warning or "")
    assert costly.expected_false_reject <= 0.05
    chosen = choose_operating_point(good, defects, Target(false_reject=0.05, miss=0.01))
    assert chosen.target == "miss" and chosen.threshold == point.threshold
    with pytest.raises(ValueError, match="false-reject target"):
        Target(false_reject=0.7)


def test_the_best_miss_at_a_false_reject_bound_is_a_property_of_the_scores() -> None:
    good = np.arange(100.0)  # at 5 % false rejects the threshold must pass 94
    assert best_miss_at(good, [90.0, 94.0, 95.0, 200.0], 0.05) == pytest.approx(0.5)
    assert best_miss_at(good, [90.0, 94.0, 95.0, 200.0], 0.0) == pytest.approx(0.75)


def _parts(folder: Path, levels: list[int], spot: bool = False, names: str = "part_{:02d}.png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, level in enumerate(levels):
        image = np.random.default_rng(index).integers(level, level + 40, size=(120, 160), dtype=np.uint8)
        if spot:
            image[70:100, 100:140] = 250
        path = folder / names.format(index)
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def test_models_evaluate_reports_rates_with_intervals_per_defect_type(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    good, spots, dark = tmp_path / "good", tmp_path / "spot", tmp_path / "dark"
    _parts(good, [40 + 4 * i for i in range(30)])  # scores about 0.24..0.69 against the threshold 0.5
    _parts(spots, [30, 50, 70, 90], spot=True)
    _parts(dark, [10, 12])  # defects the brightness model cannot see
    result = run_cli("models", "evaluate", "--config", str(config), "--model", "bright-spot", "--good", str(good),
                     "--defect", str(spots), "--defect", str(dark), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "bright-spot" and report["good_files"] == 30 and report["defect_files"] == 6
    false_reject = report["false_reject"]
    assert 0 < false_reject["rate"] < 1 and false_reject["of"] == 30
    assert false_reject["interval"][0] < false_reject["rate"] < false_reject["interval"][1]
    assert report["per_defect_type"]["spot"]["miss"]["rate"] == 0.0
    assert report["per_defect_type"]["dark"]["miss"]["rate"] == 1.0
    assert 0 <= report["auroc_interval"][0] <= report["auroc"] <= report["auroc_interval"][1] <= 1
    point = report["threshold_for_target_from_these_parts"]
    assert point["good_parts"] == 30 and point["target_rate"] == 0.05
    assert "not record its training files" in report["note"]
    human = run_cli("models", "evaluate", "--config", str(config), "--model", "bright-spot", "--good", str(good),
                    "--defect", str(spots))
    assert human.returncode == 0 and "false rejects" in human.stdout and "spot" in human.stdout
    missing = run_cli("models", "evaluate", "--config", str(config), "--model", "nope", "--good", str(good))
    assert missing.returncode == 2 and "unknown model 'nope'" in missing.stderr
