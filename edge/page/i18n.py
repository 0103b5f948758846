"""Message catalogues (``i18n/<lang>.json``) and the choice of language for a request."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

LANGUAGES: tuple[str, ...] = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "edge_lang"


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    """The flat key -> text catalogue of a language (read once)."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; allowed: {', '.join(LANGUAGES)}")
    text = resources.files("edge.page").joinpath("i18n", f"{lang}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return {str(k): str(v) for k, v in data.items()}


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The remembered choice, else the first supported language the browser asks for, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")):
        name, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, name.strip().lower().split("-")[0]))
    for _, _, primary in sorted(ranked):
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def translate(lang: str, key: str, **values: object) -> str:
    """The text of ``key`` (the key itself when missing, so a gap shows instead of breaking the page)."""
    text = catalogue(lang).get(key, key)
    return text.format(**values) if values else text
