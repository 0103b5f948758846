"""The unit in systemd/ passes `systemd-analyze verify` without a warning and keeps its hardening.

verify checks that the commands exist, so it runs on a copy whose /opt/edge-inspect/venv paths point at the
environment running the tests. Skipped where systemd-analyze is absent."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import PROJECT_ROOT

UNITS = sorted([*(PROJECT_ROOT / "systemd").glob("*.service"), *(PROJECT_ROOT / "systemd").glob("*.timer")])
INSTALLED_VENV = "/opt/edge-inspect/venv"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def local_copy(unit: Path, folder: Path) -> Path:
    text = unit.read_text(encoding="utf-8")
    if unit.name == "edge-inspect.service":
        assert INSTALLED_VENV in text, "the unit runs the station from the README's virtual environment"
    copy = folder / unit.name
    copy.write_text(text.replace(INSTALLED_VENV, str(Path(sys.executable).parent.parent)), encoding="utf-8")
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies_without_warnings(unit: Path, tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "verify", str(local_copy(unit, tmp_path))], capture_output=True, text=True,
                            timeout=60)
    # verify exits 0 on unknown keys and bad values, but names them: any output is a defect
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_station_unit_is_a_hardened_notify_service(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = PROJECT_ROOT / "systemd" / "edge-inspect.service"
    text = unit.read_text(encoding="utf-8")
    settings = {(k, v) for k, v in re.findall(r"^(\w+)=(.*)$", text, flags=re.MULTILINE)}
    for expected in [("Type", "notify"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                     ("ReadWritePaths", "/var/lib/edge-inspect"), ("DevicePolicy", "closed"),
                     ("User", "edge-inspect"), ("Restart", "always"), ("PrivateTmp", "yes")]:
        assert expected in settings, expected
    assert any(k == "WatchdogSec" for k, _ in settings) and any(k == "StartLimitBurst" for k, _ in settings)
    assert {v for k, v in settings if k == "DeviceAllow"} >= {"char-video4linux rw", "char-alsa rw", "char-ttyUSB rw"}
    families = next(v for k, v in settings if k == "RestrictAddressFamilies").split()
    assert "AF_PACKET" not in families and {"AF_INET", "AF_UNIX"} <= set(families)
    result = subprocess.run([ANALYZE, "security", "--offline=yes", str(local_copy(unit, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert exposure is not None, result.stdout + result.stderr
    assert float(exposure.group(1)) <= 2.5, "systemd-analyze security rates the unit's exposure higher than before"
