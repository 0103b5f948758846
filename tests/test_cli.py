"""The command line: offline verdicts, config check, models and db helpers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
from modelkit import dark_part, make_brightness_model
from support import EDGE_INSPECT, PROJECT_ROOT, write_station_config
from test_service_live import run_cli

from edge.store.schema import LATEST_VERSION


def test_verdict_prints_one_json_line_per_file_and_reports_bad_files(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    cv2.imwrite(str(good), dark_part())
    cv2.imwrite(str(bad), dark_part(spot=True))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    result = run_cli("verdict", "--config", str(config), str(good), str(bad), str(broken))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("decision") for line in lines] == ["OK", "NG", None]
    assert lines[1]["label"] == "defect" and lines[1]["defect_region"]["x"] > 0.5
    assert lines[2]["error"]["code"] in ("corrupt", "not_an_image")
    assert result.returncode == 1
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160), 128, np.uint8))
    gated = run_cli("verdict", "--config", str(config), str(blank))
    assert gated.returncode == 0, gated.stderr
    line = json.loads(gated.stdout)
    assert line["decision"] == "INVALID" and "blank" in line["reason"] and line["inference_ms"] is None
    unknown = run_cli("verdict", "--config", str(config), "--model", "nope", str(good))
    assert unknown.returncode == 2 and "unknown model 'nope'" in unknown.stderr


def test_config_check(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    ok = run_cli("config", "check", "--config", str(config))
    assert ok.returncode == 0 and "config OK" in ok.stdout and "bright-spot: version 1 OK" in ok.stdout
    bad = write_station_config(tmp_path, models={"vision": "missing-model"})
    failed = run_cli("config", "check", "--config", str(bad))
    assert failed.returncode == 2 and "missing-model" in failed.stderr


def test_config_check_says_a_station_beyond_loopback_needs_an_admin_first(tmp_path: Path) -> None:
    config = write_station_config(tmp_path, api={"host": "0.0.0.0", "port": 8080})
    refused = run_cli("config", "check", "--config", str(config))
    assert refused.returncode == 2 and f"users add NAME --role admin --config {config}" in refused.stderr
    added = subprocess.run([*EDGE_INSPECT, "users", "add", "root-admin", "--role", "admin", "--pin-stdin", "--config",
                            str(config)], input="correct horse battery\n", capture_output=True, text=True,
                           cwd=PROJECT_ROOT, timeout=60)
    assert added.returncode == 0, added.stderr
    accepted = run_cli("config", "check", "--config", str(config))
    assert accepted.returncode == 0 and "every request needs a token or a session" in accepted.stdout


def test_models_list_promote_rollback_and_db_helpers(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    make_brightness_model(tmp_path / "data" / "models", version=2, threshold=0.8)
    listing = run_cli("models", "list", "--config", str(config))
    assert "* bright-spot" in listing.stdout and "v2" in listing.stdout
    assert run_cli("models", "promote", "--config", str(config), "bright-spot", "1").returncode == 0
    shown = json.loads(run_cli("models", "show", "--config", str(config), "bright-spot").stdout)
    assert shown["version"] == 1
    assert "rolled back to v2" in run_cli("models", "rollback", "--config", str(config), "bright-spot").stdout
    assert run_cli("models", "promote", "--config", str(config), "bright-spot", "9").returncode == 2
    trail = [json.loads(line) for line in run_cli("audit", "list", "--config", str(config)).stdout.splitlines()]
    changes = [(e["action"], e["before"], e["after"]) for e in trail if e["entity"] == "model"]
    assert changes == [("model_promoted", {"active_version": 2}, {"active_version": 1}),
                       ("model_rolled_back", {"active_version": 1}, {"active_version": 2})]
    assert all(e["actor"].startswith("cli:") for e in trail)
    assert run_cli("audit", "verify", "--config", str(config)).returncode == 0

    info = json.loads(run_cli("db", "info", "--config", str(config)).stdout)  # the audit created the database
    assert info["schema_version"] == LATEST_VERSION and info["rows"]["verdicts"] == 0 and info["rows"]["audit_log"] == 2
    assert "schema is up to date" in run_cli("db", "migrate", "--config", str(config)).stdout
    backup = tmp_path / "copy.db"
    assert run_cli("db", "backup", "--config", str(config), str(backup)).returncode == 0 and backup.is_file()
    assert run_cli("db", "export", "--config", str(config)).stdout == ""


def test_help_for_every_command() -> None:
    for command in (["--help"], ["run", "--help"], ["verdict", "--help"], ["config", "check", "--help"],
                    ["db", "--help"], ["models", "--help"], ["audit", "--help"], ["audit", "verify", "--help"],
                    ["users", "--help"], ["tokens", "--help"], ["tokens", "create", "--help"]):
        assert run_cli(*command).returncode == 0


def test_make_brightness_model_is_importable_for_other_tests(tmp_path: Path) -> None:
    assert (make_brightness_model(tmp_path) / "manifest.json").is_file()


def _part_images(folder: Path, levels: list[int], spot: bool = False) -> None:
    """Dark parts whose brightness (the small model's score) rises with the level."""
    folder.mkdir(parents=True)
    for index, level in enumerate(levels):
        rng = np.random.default_rng(index)
        image = rng.integers(level, level + 40, size=(120, 160), dtype=np.uint8)
        if spot:
            image[70:100, 100:140] = 250
        cv2.imwrite(str(folder / f"part_{index:02d}.png"), image)


def test_models_calibrate_sets_the_threshold_from_unseen_good_parts_as_a_new_version(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    good, defects = tmp_path / "good", tmp_path / "scratch"
    _part_images(good, [40 + 4 * i for i in range(30)])  # scores about 0.24..0.69: v1's 0.5 rejects many
    (good / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    _part_images(defects, [30, 50, 70], spot=True)
    args = ["models", "calibrate", "--config", str(config), "bright-spot", "--good", str(good)]

    dry = run_cli(*args, "--defect", str(defects), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["good_files"] == 30 and report["defect_files"] == {"scratch": 3}
    assert [item["path"] for item in report["skipped"]] == [str(good / "broken.jpg")]
    assert report["at_previous_threshold"]["false_reject_rate"] > 0.3
    assert report["at_new_threshold"]["false_reject_rate"] <= 0.04 + 1 / 30
    assert report["at_new_threshold"]["miss_rate"] == 0.0 and report["new_threshold"] > 0.5
    assert "registered_version" not in report
    assert "v2" not in run_cli("models", "list", "--config", str(config)).stdout

    done = json.loads(run_cli(*args).stdout)
    assert done["registered_version"] == 2 and done["active"]
    shown = json.loads(run_cli("models", "show", "--config", str(config), "bright-spot").stdout)
    original = json.loads(run_cli("models", "show", "--config", str(config), "bright-spot", "1").stdout)
    assert shown["version"] == 2 and shown["threshold"] == done["new_threshold"]
    assert shown["onnx_sha256"] == original["onnx_sha256"] and shown["training"]["parent_version"] == 1
    assert shown["metrics"]["site_calibration"]["previous_threshold"] == 0.5
    brightest = sorted(good.glob("part_*.png"))[-3]  # NG at v1's threshold, OK now
    verdict = json.loads(run_cli("verdict", "--config", str(config), str(brightest)).stdout)
    assert verdict["decision"] == "OK" and verdict["model"]["version"] == 2
    assert "rolled back to v1" in run_cli("models", "rollback", "--config", str(config), "bright-spot").stdout


def test_models_calibrate_refuses_too_few_images_and_unknown_models(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    few = tmp_path / "few"
    _part_images(few, [40, 50, 60, 70, 80])
    refused = run_cli("models", "calibrate", "--config", str(config), "bright-spot", "--good", str(few))
    assert refused.returncode == 2 and "at least 20 judged good files, got 5" in refused.stderr
    unknown = run_cli("models", "calibrate", "--config", str(config), "nope", "--good", str(few))
    assert unknown.returncode == 2 and "unknown model 'nope'" in unknown.stderr
    bad_rate = run_cli("models", "calibrate", "--config", str(config), "bright-spot", "--good", str(few),
                       "--false-reject", "0.9")
    assert bad_rate.returncode == 2 and "--false-reject" in bad_rate.stderr
    assert "v2" not in run_cli("models", "list", "--config", str(config)).stdout


def test_models_compare_judges_the_same_files_with_two_versions_and_lists_disagreements(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    make_brightness_model(tmp_path / "data" / "models", version=2, threshold=0.6)  # the candidate
    assert run_cli("models", "promote", "--config", str(config), "bright-spot", "1").returncode == 0
    good, defects = tmp_path / "good", tmp_path / "spot"
    _part_images(good, [40 + 4 * i for i in range(30)])
    _part_images(defects, [30, 50, 70], spot=True)
    (defects / "empty.png").write_bytes(b"")
    result = run_cli("models", "compare", "--config", str(config), "bright-spot", "--good", str(good),
                     "--defect", str(defects))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    active, candidate = report["versions"]
    assert (active["version"], active["active"], candidate["version"], candidate["active"]) == (1, True, 2, False)
    assert active["false_reject_rate"] > candidate["false_reject_rate"] > 0  # 0.6 rejects fewer than 0.5
    assert active["miss_rate_by_label"] == candidate["miss_rate_by_label"] == {"spot": 0.0}
    assert active["auroc"] == candidate["auroc"] == 1.0 and active["skipped_files"] == 1
    # the thresholds nest, so the disagreements are exactly the good parts only v1 rejects
    expected = round(30 * (active["false_reject_rate"] - candidate["false_reject_rate"]))
    assert report["disagreements"] == expected == len(report["disagreeing_files"])
    assert all(d["expected"] == "OK" and d["v1"] == "NG" and d["v2"] == "OK" for d in report["disagreeing_files"])
    shown = json.loads(run_cli("models", "show", "--config", str(config), "bright-spot").stdout)
    assert shown["version"] == 1  # comparing promotes nothing
    same = run_cli("models", "compare", "--config", str(config), "bright-spot", "--good", str(good),
                   "--versions", "1", "1")
    assert same.returncode == 2 and "--versions A B" in same.stderr
    missing = run_cli("models", "compare", "--config", str(config), "bright-spot", "--good", str(good),
                      "--versions", "1", "7")
    assert missing.returncode == 2 and "7" in missing.stderr and "Traceback" not in missing.stderr
