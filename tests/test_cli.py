"""The command line: offline verdicts, config check, models and db helpers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from modelkit import dark_part, make_brightness_model
from support import write_station_config
from test_service_live import run_cli


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

    assert run_cli("db", "info", "--config", str(config)).returncode == 2  # no database before first start
    assert "applied migrations [1, 2]" in run_cli("db", "migrate", "--config", str(config)).stdout
    info = json.loads(run_cli("db", "info", "--config", str(config)).stdout)
    assert info["schema_version"] == 2 and info["rows"]["verdicts"] == 0
    backup = tmp_path / "copy.db"
    assert run_cli("db", "backup", "--config", str(config), str(backup)).returncode == 0 and backup.is_file()
    assert run_cli("db", "export", "--config", str(config)).stdout == ""


def test_help_for_every_command() -> None:
    for command in (["--help"], ["run", "--help"], ["verdict", "--help"], ["config", "check", "--help"],
                    ["db", "--help"], ["models", "--help"]):
        assert run_cli(*command).returncode == 0


def test_make_brightness_model_is_importable_for_other_tests(tmp_path: Path) -> None:
    assert (make_brightness_model(tmp_path) / "manifest.json").is_file()
