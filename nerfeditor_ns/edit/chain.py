"""Chained edits: ``ns-edit`` on a run that ns-edit itself wrote.

The edited run's alpha = 1 scene becomes the new edit's original: the run is loaded with its edit's residual frozen
into the base (:meth:`NerfEditorModel._move_edit_into_base`, driven by one more entry in the model's
``prior_edit_regions``), so everything ns-edit renders "at alpha 0" (views, crops, masks, the inverted frontal crop,
the outputs' "before") is the earlier edit's result, L_br / L_ori and the residual penalty hold the new edit to it,
and the finished run keeps the earlier edit under its new one. ``edit.json`` lists the earlier edits (``chain``,
oldest first).

No torch import at module level (the checks read the edited run's record before anything heavy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from nerfeditor_ns.edit.errors import EditError
from nerfeditor_ns.edit.run_dir import EDIT_RECORD


def run_record(config_path: Path) -> Optional[Dict[str, Any]]:
    """The ``edit.json`` of the run whose ``config.yml`` is ``config_path`` (None: not a run written by ns-edit)."""
    path = Path(config_path).absolute().parent / EDIT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("edit"), dict):
            raise ValueError("no 'edit' entry")
    except (OSError, ValueError) as err:
        raise EditError(f"{path} cannot be read as an ns-edit record ({err}), so the edit of that run cannot be "
                        "chained onto.", "restore the run's edit.json, or edit its original run instead.") from None
    return record


def is_finetuned_config(config_path: Path) -> bool:
    """Whether a run's ``config.yml`` (read as text) is a finetune written by ns-edit (``finetune: true``)."""
    import re

    text = Path(config_path).read_text(errors="replace")
    return re.search(r"^\s+finetune:\s*true\s*$", text, flags=re.MULTILINE) is not None


def essentials(record: Dict[str, Any], config_path: Path) -> Dict[str, Any]:
    """What ``edit.json``'s ``chain`` keeps of one earlier edit."""
    finetune = dict(record.get("finetune") or {})
    settings = dict(record.get("settings") or {})
    return {
        "run": str(Path(config_path).absolute().parent),
        "edit": record.get("edit"),
        "original_run": record.get("original_run"),
        "edit_region": record.get("edit_region"),
        "finetune": {k: finetune.get(k) for k in ("steps", "original_steps", "loss_weights", "freeze_original")},
        "finetune_lr_scale": settings.get("finetune_lr_scale"),
        "created": record.get("created"),
    }


def earlier_edits(config_path: Path) -> List[Dict[str, Any]]:
    """The edits already in the run of ``config_path``, oldest first (empty for a run trained with ns-train).

    A finetuned run without its ``edit.json`` (an interrupted edit's ``.partial`` folder, or a copied run) is
    refused: its edit could not be recorded."""
    record = run_record(config_path)
    if record is None:
        if is_finetuned_config(config_path):
            raise EditError(
                f"{config_path} is a finetuned run without its {EDIT_RECORD} (an unfinished edit's .partial folder, "
                "or a run copied without it), so its edit cannot be chained onto.",
                "pass a finished edit's config.yml, or the original run's.",
            )
        return []
    chain = record.get("chain") or []
    return [*chain, essentials(record, config_path)]


def base_training_steps(chain: List[Dict[str, Any]]) -> Optional[int]:
    """Iterations of the run the chain started from (the first edit's ``original_steps``), None when unknown."""
    if not chain:
        return None
    steps = (chain[0].get("finetune") or {}).get("original_steps")
    return None if steps is None else int(steps)


def lr_scale_of_last(chain: List[Dict[str, Any]]) -> float:
    """The ``--finetune-lr-scale`` the edited run was finetuned with (its checkpoint's learning rates carry it)."""
    scale = chain[-1].get("finetune_lr_scale") if chain else None
    return 1.0 if scale is None else float(scale)


def as_chain_base(config: Any) -> Any:
    """A loaded edited run's config, changed so that its model loads with its edit frozen into the base: one more
    entry in ``prior_edit_regions`` (the edit's region) and opening at alpha 0 (= the edit's result)."""
    from nerfeditor_ns.nerf.edit_region import encode_prior_region

    model = config.pipeline.model
    earlier = tuple(getattr(model, "prior_edit_regions", ()) or ())
    model.prior_edit_regions = earlier + encode_prior_region(model.edit_box, model.edit_box_falloff,
                                                             model.edit_box_bottom)
    model.default_alpha = 0.0
    return config
