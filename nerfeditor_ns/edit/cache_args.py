"""The command-line arguments of ``ns-edit cache list`` and ``ns-edit cache clean`` (tyro dataclasses, one docstring
per field). Standard library only: parsing them imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List


@dataclass
class CacheListArgs:
    """List the scene cache of a run: the results of the edit-independent steps (render, crops, masks, invert,
    adjustor, gen_finetune, original_views) that every edit of the run reuses, kept in <run>.nerfeditor-cache beside
    the run, with their disk use."""

    load_config: Path
    """config.yml of the edited (original) run, as given to ns-edit --load-config."""
    step: List[str] = field(default_factory=list)
    """Only these steps, space separated (default: all)."""


@dataclass
class CacheCleanArgs:
    """Remove the scene cache of a run (<run>.nerfeditor-cache beside it) and report the disk space freed. The run
    itself and finished edits are never touched; the next edit of the run recomputes what it needs."""

    load_config: Path
    """config.yml of the edited (original) run, as given to ns-edit --load-config."""
    step: List[str] = field(default_factory=list)
    """Remove only these steps' entries, space separated (default: all)."""
