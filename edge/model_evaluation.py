"""``edge-inspect models evaluate``: a model judged on labelled parts it was never trained on.

The figures are the ones the benchmarks report (models.evaluation): AUROC with a bootstrap interval
that resamples whole parts, false rejects and misses at the model's threshold with Wilson intervals,
overall and per defect type, and the threshold these parts give for the model's own target. Files
the model was trained on (their digests are in its manifest) are left out and listed: a figure from
them says how well the model remembers, not how it will judge new parts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.site_calibration import ScoredFiles
from models.evaluation import Target, choose_operating_point, groups_of, photo_groups, score_report
from models.manifest import Manifest

DIGEST_KEY = "file_sha256"  # manifest.training.data: the first 16 hex digits of each training file's sha256
DIGEST_CHARS = 16
GroupRule = Literal["auto", "file", "folder", "number-run"]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:DIGEST_CHARS]


def training_digests(examples: dict[str, list[Path]]) -> list[str]:
    """What a manifest records of its training files (sorted, so the order of folders does not matter)."""
    return sorted({file_digest(path) for paths in examples.values() for path in paths})


def split_trained_on(files: list[Path], manifest: Manifest) -> tuple[list[Path], list[str]]:
    """``files`` the model was not trained on, and the paths of those it was (by content, not name)."""
    known = set(manifest.training.data.get(DIGEST_KEY) or [])
    if not known:
        return files, []
    kept: list[Path] = []
    excluded: list[Path] = []
    for path in files:
        (excluded if file_digest(path) in known else kept).append(path)
    return kept, [str(p) for p in excluded]


def _groups(paths: list[str], rule: GroupRule) -> list[str]:
    if rule == "auto":
        runs = photo_groups(paths)
        return [str(p) for p in paths] if runs is None else [f"run-{r}" for r in runs]
    return groups_of([Path(p) for p in paths], rule)


def model_target(manifest: Manifest) -> Target:
    """The target the model's threshold was set for (the default target for models that record none)."""
    recorded = (manifest.metrics.get("operating_point") or {}).get("target")
    if isinstance(recorded, dict) and recorded.get("false_reject"):
        return Target(float(recorded["false_reject"]),
                      float(recorded["miss"]) if recorded.get("miss") is not None else None)
    return Target()


def evaluation_report(manifest: Manifest, good: ScoredFiles, defects: dict[str, ScoredFiles],
                      trained_on: list[str], group_by: GroupRule = "auto") -> dict[str, Any]:
    """The report of ``models evaluate`` (see the module's doc)."""
    if not good.scores:
        if trained_on and not good.skipped:
            raise ValueError(f"the model was trained on every one of these good files ({len(trained_on)} left out): "
                             "evaluate it on parts it has not seen")
        raise ValueError("none of the good files could be judged: "
                         + "; ".join(f"{path}: {reason}" for path, reason in good.skipped[:3]))
    defect_scores = {label: scored.scores for label, scored in defects.items() if scored.scores}
    report: dict[str, Any] = {
        "model": manifest.name, "version": manifest.version, "kind": manifest.kind,
        "threshold": manifest.threshold, "group_by": group_by,
        **score_report(good.scores, defect_scores, manifest.threshold, _groups(good.paths, group_by),
                       {label: _groups(defects[label].paths, group_by) for label in defect_scores}),
    }
    report["parts"] = len(set(_groups(good.paths, group_by)))
    if promised := manifest.metrics.get("operating_point"):
        report["promised_at_training"] = {key: promised.get(key) for key in (
            "target", "expected_false_reject", "false_reject_interval", "expected_miss", "miss_interval",
            "good_parts", "defect_parts", "warning")}
    target = model_target(manifest)
    every_defect = np.concatenate([np.asarray(s) for s in defect_scores.values()]) if defect_scores else np.zeros(0)
    parts = "normal clips" if manifest.modality == "acoustic" else "good parts"
    point = choose_operating_point(good.scores, every_defect, target, parts)
    report["threshold_for_target_from_these_parts"] = point.as_dict()
    report["trained_on_left_out"] = trained_on
    if not manifest.training.data.get(DIGEST_KEY):
        report["note"] = ("this model does not record its training files: make sure none of these parts were "
                          "among them, or the figures are optimistic")
    skipped = good.skipped + [item for scored in defects.values() for item in scored.skipped]
    report["skipped"] = [{"path": path, "reason": reason} for path, reason in skipped]
    return report


def _rate(entry: dict[str, Any]) -> str:
    low, high = entry["interval"]
    return f"{entry['rate']:.1%} ({entry['errors']}/{entry['of']}; 95 % {low:.1%}-{high:.1%})"


def human_summary(report: dict[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    lines = [f"{report['model']} v{report['version']} ({report['kind']}), threshold {report['threshold']:.4g}: "
             f"{report['good_files']} good files from {report['parts']} parts, {report['defect_files']} defect files",
             f"false rejects {_rate(report['false_reject'])}"]
    if "miss" in report:
        lines.append(f"misses        {_rate(report['miss'])}")
    if "auroc" in report:
        low, high = report["auroc_interval"]
        lines.append(f"AUROC         {report['auroc']:.3f} (95 % {low:.3f}-{high:.3f})")
    for label, entry in report.get("per_defect_type", {}).items():
        auroc = f", AUROC {entry['auroc']:.3f}" if "auroc" in entry else ""
        lines.append(f"  {label:<12} misses {_rate(entry['miss'])}{auroc}")
    point = report["threshold_for_target_from_these_parts"]
    lines.append(f"these parts set the threshold for the model's target at {point['threshold']:.4g}"
                 + (f" ({point['warning']})" if point.get("warning") else ""))
    if report["trained_on_left_out"]:
        lines.append(f"left out {len(report['trained_on_left_out'])} file(s) the model was trained on")
    if report["skipped"]:
        lines.append(f"skipped {len(report['skipped'])} file(s) that could not be judged")
    if note := report.get("note"):
        lines.append(f"note: {note}")
    return "\n".join(lines)
