"""A non-editable install runs outside the source tree: the project's wheel, installed into a fresh virtual
environment, gives an `edge-inspect` whose --version is the package's, whose `config check` passes on the
embedded default from any folder, and whose station judges the bundled samples into the user's data folder.

Offline and quick: the wheel is built without build isolation and installed with --no-deps --no-index;
the new environment reaches the dependencies through a .pth line naming this environment's site-packages
(whose own .pth files, the editable install's among them, are not processed from there)."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from support import PROJECT_ROOT, free_port

PACKAGES = ("edge", "vision", "acoustic", "models", "firmware_bridge")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_module_level_import_is_declared_outside_the_dev_extra() -> None:
    """The environment here holds the test tools too; an import only they satisfy (httpx once was) fails on a
    station. Allowed: the runtime dependencies and what they require, and what an extra names itself.
    Imports inside functions are optional by design (psycopg for the collector)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    provided, todo = set(runtime), list(runtime)
    while todo:  # what the runtime dependencies pull in (not their own extras)
        try:
            requires = metadata.requires(todo.pop()) or []
        except metadata.PackageNotFoundError:
            continue
        for name in {_name(r) for r in requires if "extra ==" not in r} - provided:
            provided.add(name)
            todo.append(name)
    provided |= {_name(r) for extra, reqs in project["optional-dependencies"].items() if extra != "dev" for r in reqs}
    owners = metadata.packages_distributions()
    missing = []
    for package in PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for module in {m.split(".")[0] for m in modules} - set(PACKAGES) - sys.stdlib_module_names:
                    dists = {_name(d) for d in owners.get(module, [module])}
                    if not dists & provided:
                        missing.append(f"{path.relative_to(PROJECT_ROOT)}: {module} ({', '.join(sorted(dists))})")
    assert not missing, "imported but not declared in pyproject's dependencies or a non-dev extra:\n" + \
        "\n".join(missing)


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh virtual environment holding the project's wheel."""
    root = tmp_path_factory.mktemp("install")
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    built = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                 "--wheel-dir", str(root / "wheels"), str(PROJECT_ROOT)], root, env)
    assert built.returncode == 0, built.stderr
    wheel = next((root / "wheels").glob("edge_inspect-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    target = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      root, env).stdout.strip())
    (target / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    done = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                "--ignore-installed", str(wheel)], root, env)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_INSPECT_CONFIG", "XDG_DATA_HOME", "PYTHONPATH")}
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1"}


def test_the_installed_package_is_the_one_that_runs(installed: Path, tmp_path: Path) -> None:
    where = run([str(installed / "python"), "-c", "import edge, models; print(edge.__file__); print(models.__file__)"],
                tmp_path, clean_env(tmp_path))
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(installed.parent) and not Path(line).is_relative_to(PROJECT_ROOT), line


def test_version_names_the_package_version(installed: Path, tmp_path: Path) -> None:
    expected = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = run([str(installed / "edge-inspect"), "--version"], tmp_path, clean_env(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == f"edge-inspect {expected}", result


def test_config_check_passes_on_the_embedded_default_from_any_folder(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "some" / "folder"
    elsewhere.mkdir(parents=True)
    result = run([str(installed / "edge-inspect"), "config", "check"], elsewhere, clean_env(tmp_path / "home"))
    assert result.returncode == 0, result.stdout + result.stderr
    data = tmp_path / "home" / ".local" / "share" / "edge-inspect"
    assert f"data folder {data}," in result.stdout, result.stdout
    env = {**clean_env(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    moved = run([str(installed / "edge-inspect"), "config", "check"], elsewhere, env)
    assert moved.returncode == 0 and f"data folder {tmp_path / 'xdg' / 'edge-inspect'}," in moved.stdout, moved


def test_installed_station_judges_the_bundled_samples(installed: Path, tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(installed / "edge-inspect"), "run", "--port", str(port)], cwd=tmp_path,
                                   env=clean_env(home), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, items = time.monotonic() + 120, []
        while time.monotonic() < deadline and len(items) < 2:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                items = httpx.get(f"http://127.0.0.1:{port}/api/v1/verdicts?limit=10", timeout=5).json()["items"]
            time.sleep(0.5)
        assert len(items) >= 2, log.read_text()
        assert {item["decision"] for item in items} <= {"OK", "NG"}
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert (home / ".local" / "share" / "edge-inspect" / "verdicts.db").is_file()
