"""Station configuration: strict validation with messages that name the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import DEFAULT_CONFIG, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_default_config_is_valid_and_resolves_paths_next_to_itself() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert config.station.id == "demo-station"
    assert config.data_dir == DEFAULT_CONFIG.parent.parent / "data"
    assert config.resolve(config.sources[0].folder).is_dir()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.api.port == 8080 and config.sources == []


@pytest.mark.parametrize(("text", "expected"), [
    ("api:\n  prot: 80\n", ["api.prot", "unknown key", "host", "port"]),
    ("storage:\n  save_images: maybe\n", ["storage.save_images", "'ng'", "maybe"]),
    ("api:\n  port: 70000\n", ["api.port", "less than or equal to 65535"]),
    ("sources:\n  - {type: replay, folder: x, colour: 3}\n", ["sources.0.replay.colour", "interval_s"]),
    ("sources:\n  - {type: webcam}\n", ["sources.0", "webcam", "replay"]),
    ("sources:\n  - {type: replay, folder: a}\n  - {type: replay, folder: b}\n", ["unique", "replay"]),
    ("station:\n  id: 'has spaces'\n", ["station.id", "pattern"]),
    ("training:\n  priority: urgent\n", ["training.priority", "'idle'", "'low'", "urgent"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    ("api: {port: [\n", ["not valid YAML"]),
])
def test_bad_config_names_file_key_and_allowed(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
