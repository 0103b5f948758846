"""The station page's message catalogues: the same keys in every language, every key the templates and
scripts use present, and no user-visible literal text left in a template or a script."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge.page.i18n import LANGUAGES, catalogue, choose_language, translate

PAGE = Path(__file__).resolve().parents[1] / "edge" / "page"
TEMPLATES = sorted((PAGE / "templates").glob("*.html"))
SCRIPTS = sorted((PAGE / "static" / "js").glob("*.js"))
KEY = re.compile(r"""\bt\(\s*["']([A-Za-z0-9_.]*[A-Za-z0-9_])["']""")
KEY_PREFIX = re.compile(r"""\bt\(\s*["'`]([a-z_]+\.)""")
LITERAL = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`""")
WORDS = re.compile(r"[A-Za-z]{2,}[,.!?:]?\s+[A-Za-z]{2,}")
SELECTOR = re.compile(r"[#\[\]=]")  # CSS selectors and attribute tests, not text


def looks_like_text(body: str) -> bool:
    """Words a person would read: a phrase that is capitalised or ends a sentence, or three words or more
    (class lists like "point broken" are two lower-case words; selectors carry # [ ] =)."""
    if SELECTOR.search(body) or not WORDS.search(body):
        return False
    words = re.findall(r"[A-Za-z]{2,}", body)
    return len(words) >= 3 or bool(re.search(r"[A-Z]", body)) or bool(re.search(r"[.!?]\s*$", body))
CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def keys_used() -> set[str]:
    used: set[str] = set()
    for path in [*TEMPLATES, *SCRIPTS]:
        text = path.read_text(encoding="utf-8")
        used |= set(KEY.findall(text))
        used |= {m for m in re.findall(r"""["']((?:error|session|connection)\.[a-z_]+)["']""", text)}
    return used


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    reference = catalogue("en")
    for lang in LANGUAGES:
        other = catalogue(lang)
        assert set(other) == set(reference), f"{lang}: {sorted(set(other) ^ set(reference))}"
        for key, text in reference.items():
            assert set(re.findall(r"\{(\w+)\}", other[key])) == set(re.findall(r"\{(\w+)\}", text)), (lang, key)
            assert other[key].strip(), (lang, key)


def test_every_key_in_use_is_in_the_catalogues() -> None:
    missing = sorted(keys_used() - set(catalogue("en")))
    assert not missing, f"keys used but not in the catalogues: {missing}"
    prefixes = {p for path in [*TEMPLATES, *SCRIPTS] for p in KEY_PREFIX.findall(path.read_text(encoding="utf-8"))}
    for prefix in prefixes:  # keys built at run time (decision.OK, role.operator, ...) have entries
        assert any(key.startswith(prefix) for key in catalogue("en")), prefix


def test_templates_hold_no_literal_text() -> None:
    for path in TEMPLATES:
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", text, flags=re.S)
        text = re.sub(r"<script\b[^>]*>.*?</script>|<style\b[^>]*>.*?</style>", " ", text, flags=re.S)
        visible = re.sub(r"<[^>]+>", " ", text)
        words = [w for w in re.findall(r"[^\W\d_]{2,}", visible) if w.lower() not in {"thr"}]
        assert not words, f"{path.name}: literal text {words[:10]}"
        for attribute in re.findall(r"""\b(?:title|alt|placeholder|aria-label)="([^"]*)\"""", text):
            assert not re.search(r"[^\W\d_]{2,}", attribute), f"{path.name}: literal attribute {attribute!r}"
        assert not CJK.search(text), f"{path.name}: Chinese text outside the catalogue"


def test_scripts_hold_no_literal_text() -> None:
    for path in SCRIPTS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("//", 1)[0] if not line.lstrip().startswith("//") else ""
            for literal in LITERAL.findall(code):
                body = re.sub(r"\$\{[^}]*\}", " ", literal[1:-1])
                assert not looks_like_text(body), f"{path.name}:{number}: literal text {literal}"
                assert not CJK.search(body), f"{path.name}:{number}: Chinese text outside the catalogue"


def test_the_check_finds_a_literal() -> None:
    """The literal checks above can fail: a phrase in a script line is caught."""
    assert looks_like_text(LITERAL.findall('toast("Batch started")')[0][1:-1])
    assert looks_like_text("the batch is closed.") and not looks_like_text("#login-form input[name=user]")
    assert not looks_like_text("point broken") and not looks_like_text("./ui.js")


@pytest.mark.parametrize(("cookie", "header", "expected"), [
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"), (None, "en-US,en;q=0.9", "en"), (None, "fr-FR, zh;q=0.5", "zh"),
    (None, "de-DE", "en"), (None, None, "en"), ("zh", "en-US", "zh"), ("xx", "zh-TW", "zh"),
    (None, "en;q=0.2, zh;q=0.8", "zh"),
])
def test_language_from_cookie_then_accept_language(cookie: str | None, header: str | None, expected: str) -> None:
    assert choose_language(cookie, header) == expected


def test_translate_fills_placeholders_and_shows_a_missing_key() -> None:
    assert translate("en", "operator.serial", serial="A1") == "Part A1"
    assert translate("zh", "operator.serial", serial="A1") == "零件 A1"
    assert translate("en", "no.such.key") == "no.such.key"
    assert json.loads((PAGE / "i18n" / "zh.json").read_text(encoding="utf-8"))["lang.zh"] == "中文"
