"""The one layout of ``metrics.json`` (written by every edit) and ``eval.json`` (written by ``ns-edit eval``).

::

    {
      "schema": "nerfeditor-metrics/2",
      "producer": "ns-edit outputs step" | "ns-edit eval",
      "edited_run": ..., "original_run": ..., "edit": {"mode": ..., "value": ...},
      "settings": {...},                  # what was rendered (views, sizes, captions, networks given)
      "metrics": {KEY: ENTRY, ...},       # every key of METRICS, always present
      "notes": [...],                     # one line per metric that is switched off, saying why
      "fidelity": {...} | null,           # nerfeditor_ns.eval.fidelity.edit_fidelity_metrics
      "domain_check": {...} | null        # the edit's domain check (edit.json)
    }

An ENTRY is ``{"value": number | null, "better": "higher" | "lower", "off": null | "why it is off", ...}`` plus,
where they apply, ``views`` (how many views the value averages), ``per_view`` and per-domain values. A metric whose
network or inputs were not given is ``{"value": null, "off": "<one line>"}``; nothing is ever downloaded to fill it.
The definitions are in :data:`METRICS` (and the README's table, which a test keeps in step with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

SCHEMA = "nerfeditor-metrics/2"
"""Name and version of the layout; bump the number when a key changes meaning or disappears."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the schema."""

    key: str
    """Key in ``metrics``."""
    better: str
    """``higher`` or ``lower``."""
    paper: str
    """Where the paper reports it (or the project's own addition)."""
    definition: str
    """What is compared, where, how (one sentence; the modules hold the formulas)."""


GUIDE_VIEWS = "the guide views (V_in, then V_out)"
METRICS: Tuple[MetricSpec, ...] = (
    MetricSpec("psnr_outside_mask", "higher", "Tab. 2 PSNR",
               f"PSNR (dB) of the edited run (alpha 1) against the original run at {GUIDE_VIEWS}, outside the guide "
               "masks: how well the edit kept what it should not change."),
    MetricSpec("ssim_outside_mask", "higher", "Tab. 2 SSIM", "SSIM of the same pair over the same region."),
    MetricSpec("lpips_outside_mask", "lower", "Tab. 2 LPIPS", "LPIPS-VGG of the same pair over the same region."),
    MetricSpec("psnr_inside_mask", "higher", "Tab. 2 PSNR",
               f"PSNR (dB) of the edited run (alpha 1) against its guide images at {GUIDE_VIEWS}, inside the guide "
               "masks: how well the NeRF took on the edit."),
    MetricSpec("ssim_inside_mask", "higher", "Tab. 2 SSIM", "SSIM of the same pair over the same region."),
    MetricSpec("lpips_inside_mask", "lower", "Tab. 2 LPIPS", "LPIPS-VGG of the same pair over the same region."),
    MetricSpec("l1_inside_mask", "lower", "project",
               "Mean absolute error of the same pair over the same region (in [0, 1] RGB)."),
    MetricSpec("id_frontal", "higher", "Tab. 2/3/5 ID",
               "ArcFace cosine between the original and the edited face crop of the frontal view."),
    MetricSpec("id_in_domain", "higher", "Tab. 2/3/5 ID",
               "Mean ArcFace cosine between original and edited face crops over the in-domain views V_in."),
    MetricSpec("clip_text_similarity", "higher", "project",
               "CLIP cosine of the edited frontal crop with the prompt (prompt edits; `original` and `gain` beside)."),
    MetricSpec("clip_direction_similarity", "higher", "Instruct-NeRF2NeRF",
               "CLIP text-image direction similarity along the camera path: cos(E_I(edited) - E_I(original), "
               "E_T(target caption) - E_T(source caption)), mean over frames (prompt edits)."),
    MetricSpec("clip_direction_consistency", "higher", "Instruct-NeRF2NeRF",
               "CLIP direction consistency: cos of the image-embedding changes (edited - original) of consecutive "
               "frames of the camera path, mean over the pairs (every edit)."),
    MetricSpec("kid_before", "lower", "Tab. 3/5 FID before (as KID)",
               "KID of the original run's renders against the captured images at the training cameras."),
    MetricSpec("kid_after", "lower", "Tab. 3/5 FID after (as KID)",
               "KID of the edited run's renders (alpha 1) against the captured images at the training cameras."),
    MetricSpec("reconstruction_psnr", "higher", "project (L_ori)",
               "PSNR (dB) of the edited run at alpha 0 against the captured images: the original scene is kept."),
    MetricSpec("reconstruction_psnr_before", "higher", "project",
               "PSNR (dB) of the original run against the same captured images (the reference for the line above)."),
    MetricSpec("fr_before", "higher", "Tab. 3/5 FR",
               "Face recognition score of the original renders: MediaPipe face-detection confidence (0 where no "
               "face is found), mean over the guide views."),
    MetricSpec("fr_after", "higher", "Tab. 3/5 FR", "The same for the edited renders (alpha 1)."),
    MetricSpec("aps", "higher", "Tab. 2/3/5 APS",
               "Attribute preservation: 1 - mean NME of the face landmarks (MediaPipe face mesh) between the original "
               "and the edited render of each guide view (NME = mean 2D displacement / inter-ocular distance): the "
               "face's shape, expression and pose kept (eval/face_metrics.py)."),
    MetricSpec("pose_error", "lower", "Tab. 2 Pose",
               "Mean of |yaw error| and |pitch error| (degrees) over the edited guide views: the head rotation the "
               "landmarks imply relative to the edited frontal view vs the camera's (eval/face_metrics.py); "
               "`original` = the same for the original renders (the estimator's own error)."),
)
SPECS: Dict[str, MetricSpec] = {m.key: m for m in METRICS}
def entry(key: str, value: Optional[float], **extra: Any) -> Dict[str, Any]:
    """A computed metric (``value`` None only when no view had anything to measure, e.g. an empty region)."""
    if key not in SPECS:
        raise KeyError(f"Unknown metric {key!r}; the schema has {sorted(SPECS)}.")
    return {"value": value, "better": SPECS[key].better, "off": None, **extra}


def off(key: str, note: str) -> Dict[str, Any]:
    """A metric switched off, with the one-line reason."""
    if key not in SPECS:
        raise KeyError(f"Unknown metric {key!r}; the schema has {sorted(SPECS)}.")
    return {"value": None, "better": SPECS[key].better, "off": note}


def new_report(producer: str, **header: Any) -> Dict[str, Any]:
    """An empty report: every metric off ("not computed") until set, header fields as given."""
    report: Dict[str, Any] = {"schema": SCHEMA, "producer": producer}
    report.update(header)
    report["metrics"] = {m.key: off(m.key, f"{m.key}: not computed.") for m in METRICS}
    report["notes"] = []
    report.setdefault("fidelity", None)
    report.setdefault("domain_check", None)
    return report


def finish(report: Dict[str, Any]) -> Dict[str, Any]:
    """Collect the notes of the metrics that are off (in schema order) and check the layout; returns the report."""
    report["notes"] = [e["off"] for e in report["metrics"].values() if e.get("off")]
    validate(report)
    return report


def validate(report: Dict[str, Any]) -> None:
    """Refuse a report that does not follow the schema (ValueError naming the problem)."""
    if report.get("schema") != SCHEMA:
        raise ValueError(f"Not a {SCHEMA} report (schema: {report.get('schema')!r}).")
    metrics = report.get("metrics")
    if not isinstance(metrics, dict):
        raise ValueError("The report has no `metrics` mapping.")
    missing, unknown = sorted(set(SPECS) - set(metrics)), sorted(set(metrics) - set(SPECS))
    if missing or unknown:
        raise ValueError(f"The report's metrics do not match the schema: missing {missing}, unknown {unknown}.")
    for key, e in metrics.items():
        if not isinstance(e, dict) or "value" not in e or "off" not in e:
            raise ValueError(f"metrics[{key!r}] needs `value` and `off`.")
        if e["off"] and e["value"] is not None:
            raise ValueError(f"metrics[{key!r}] is off ({e['off']}) but has a value.")
    for key in ("producer", "notes", "fidelity", "domain_check"):
        if key not in report:
            raise ValueError(f"The report lacks `{key}`.")


def table_rows(report: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(metric, value or "off", better) rows for printing."""
    rows = []
    for spec in METRICS:
        e = report["metrics"][spec.key]
        if e.get("off"):
            shown = "off"
        elif e["value"] is None:
            shown = "n/a"
        else:
            shown = f"{e['value']:.4f}" if abs(e["value"]) < 10 else f"{e['value']:.2f}"
        rows.append((spec.key, shown, spec.better))
    return rows
