"""The new run directory of an edit: work in ``<out>.partial/``, rename to ``<out>`` when finished.

* An interrupted edit leaves only ``<out>.partial/``: nothing at ``<out>`` looks finished. The rename at the end is
  atomic (same parent directory), so ``<out>`` exists iff the edit completed; ``edit.json`` inside it is written last
  before the rename and doubles as the completion record.
* ``<out>.partial/cache/`` holds each step's result with a key (a hash of everything the step depends on). Re-running
  the same edit resumes: a step whose key matches its stored key is skipped and its result loaded.
* The original run is only read, never written.

No torch import at module level (tensors are saved/loaded through functions that import it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

from nerfeditor_ns.edit.errors import OutputExistsError
from nerfeditor_ns.io_utils import atomic_write_text

CACHE_DIRNAME = "cache"
STEPS_FILE = "steps.json"
EDIT_RECORD = "edit.json"
PARTIAL_SUFFIX = ".partial"


def step_key(*parts: Any) -> str:
    """A stable hash of a step's inputs (JSON-serialisable parts; paths and other objects by ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def safe_torch_load(path: Path) -> Any:
    """Load a cached result with the restricted unpickler (tensors and plain containers only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class RunDir:
    """The output run directory and its resume cache.

    Args:
        final: where the finished run will live.
        overwrite: replace an existing finished run at ``final`` (only at the very end, after everything succeeded).
    """

    def __init__(self, final: Path, overwrite: bool = False) -> None:
        self.final = Path(final).absolute()
        self.partial = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        self.overwrite = overwrite
        self._steps: Dict[str, Dict[str, Any]] = {}

    # ----------------------------------------------------------------------------------------------------- layout
    @property
    def cache(self) -> Path:
        """``<out>.partial/cache``: per-step results."""
        return self.partial / CACHE_DIRNAME

    @property
    def work(self) -> Path:
        """The directory the edit writes into while it runs."""
        return self.partial

    def check_output_free(self) -> None:
        """Refuse (before any work) when ``<out>`` exists and ``--overwrite`` was not given."""
        if self.final.exists() and not self.overwrite:
            raise OutputExistsError(
                f"The output directory {self.final} exists already.",
                "choose another --output-dir, or add --overwrite to replace it (it is replaced only once the new "
                "edit has finished).",
            )

    def prepare(self) -> bool:
        """Create (or reopen) the partial directory. Returns True when resuming an earlier interrupted edit."""
        self.check_output_free()
        resuming = (self.cache / STEPS_FILE).exists()
        self.cache.mkdir(parents=True, exist_ok=True)
        if resuming:
            try:
                self._steps = json.loads((self.cache / STEPS_FILE).read_text())
            except (json.JSONDecodeError, OSError):
                self._steps = {}
        return resuming

    # ------------------------------------------------------------------------------------------------------ steps
    def is_done(self, name: str, key: str) -> bool:
        """True when step ``name`` finished earlier with the same inputs (same key)."""
        rec = self._steps.get(name)
        return bool(rec and rec.get("key") == key and rec.get("done"))

    def mark_done(self, name: str, key: str, seconds: float, extra: Optional[Dict[str, Any]] = None) -> None:
        """Record a finished step (atomically, after its result files are written)."""
        self._steps[name] = {"key": key, "done": True, "seconds": round(float(seconds), 3), "finished": time.time()}
        if extra:
            self._steps[name].update(extra)
        atomic_write_text(self.cache / STEPS_FILE, json.dumps(self._steps, indent=2))

    def invalidate_from(self, name: str) -> None:
        """Forget a step's record (its results will be recomputed)."""
        if self._steps.pop(name, None) is not None:
            atomic_write_text(self.cache / STEPS_FILE, json.dumps(self._steps, indent=2))

    def seconds(self, name: str) -> Optional[float]:
        """Time the step took when it was computed (also for steps loaded from the cache)."""
        rec = self._steps.get(name)
        return None if rec is None else rec.get("seconds")

    @property
    def steps(self) -> Dict[str, Dict[str, Any]]:
        return dict(self._steps)

    # --------------------------------------------------------------------------------------------------- finalize
    def finalize(self, keep_cache: bool = False) -> Path:
        """Move the finished partial directory to its final name (atomic rename); returns the final path.

        With ``overwrite`` an existing ``<out>`` is moved aside first and deleted only after the rename succeeded.
        """
        if not (self.partial / EDIT_RECORD).exists():
            raise RuntimeError(f"{EDIT_RECORD} must be written before the run is finalized")
        if not keep_cache and self.cache.exists():
            shutil.rmtree(self.cache)
        old = None
        if self.final.exists():
            if not self.overwrite:
                raise OutputExistsError(f"The output directory {self.final} appeared while editing.", "add --overwrite.")
            old = self.final.with_name(self.final.name + f".old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.partial, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def is_finished_run(path: Path) -> bool:
    """A finished edit run: the directory exists (not ``.partial``) and has its ``edit.json``."""
    path = Path(path)
    return not path.name.endswith(PARTIAL_SUFFIX) and (path / EDIT_RECORD).is_file()
