"""One decision per part from its modalities' verdicts, by the recipe's rule."""

from __future__ import annotations

from collections.abc import Mapping

from edge.store.records import Decision


def combine(decisions: Mapping[str, Decision], rule: str = "worst") -> Decision:
    """worst: NG if any modality is NG, else INVALID if any is INVALID, else OK.
    vision-decides: the vision verdict alone (other modalities are stored, in shadow mode)."""
    if not decisions:
        raise ValueError("a part needs at least one verdict")
    if rule == "vision-decides" and "vision" in decisions:
        return decisions["vision"]
    values = set(decisions.values())
    if "NG" in values:
        return "NG"
    if "INVALID" in values:
        return "INVALID"
    return "OK"
