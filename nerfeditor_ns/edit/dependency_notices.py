"""Notices that nerfstudio's and torch's own code prints on every ``ns-edit`` run (nerfstudio 1.1.5 on torch 2.x),
quietened in ``ns-edit``'s console script.

- Deprecation warnings about lines in site-packages (nerfstudio's camera indexing, its ``torch.cuda.amp`` decorators
  and GradScaler, its eval loaders' worker count): a user can neither act on them nor silence them per run, and they
  bury the edit's progress. Exactly these are hidden (by category and message); the plugin's own warnings (e.g.
  "LPIPS left out of the metrics") and every other warning still show.
- nerfstudio's "Using a slow implementation for the <module> module ... Install tcnn" block (5 lines), printed once
  per field module built, 18 times per edit: at most once per process instead (ns-edit loads the original run with
  nerfstudio's set-up output captured, so in an edit that one is usually not shown either; ``ns-train`` prints it).

Library use (``main()`` from Python, the tests) keeps Python's filters and nerfstudio's printing as they are.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable, List

DEPENDENCY_WARNINGS = (
    # torch about nerfstudio's cameras.py indexing with lists (generate_rays and friends)
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing is deprecated"),
    # torch about nerfstudio's field_components and trainer (the cuda.amp decorators and GradScaler)
    (FutureWarning, r"`torch\.cuda\.amp\.(custom_fwd|custom_bwd|GradScaler)\(args\.\.\.\)` is deprecated"),
    (UserWarning, r"torch\.cuda\.amp\.GradScaler is enabled, but CUDA is not available"),
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    # torch's DataLoader about nerfstudio's eval loaders asking for 4 workers per GPU on a small machine
    (UserWarning, r"This DataLoader will create \d+ worker processes in total"),
)
"""(category, message regex) of each hidden warning."""

TCNN_MODULES = ("nerfstudio.field_components.encodings", "nerfstudio.field_components.mlp")
"""nerfstudio modules that bind ``print_tcnn_speed_warning`` by name."""


def hide_dependency_warnings() -> None:
    """Install the filters of :data:`DEPENDENCY_WARNINGS` (first in the filter list)."""
    for category, message in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def tcnn_notice_once() -> None:
    """nerfstudio's tiny-cuda-nn notice at most once per process (see the module docstring)."""
    import nerfstudio.utils.printing as printing

    original: Callable[[str], None] = printing.print_tcnn_speed_warning
    if getattr(original, "once_per_process", False):
        return
    shown: List[str] = []

    def once(module_name: str) -> None:
        if not shown:
            shown.append(module_name)
            original(module_name)

    once.once_per_process = True  # type: ignore[attr-defined]
    printing.print_tcnn_speed_warning = once
    for name in TCNN_MODULES:  # modules imported before this call hold the original by name
        module = sys.modules.get(name)
        if module is not None:
            module.print_tcnn_speed_warning = once  # type: ignore[attr-defined]


def quieten_dependency_notices() -> None:
    """Both of the module docstring's measures."""
    hide_dependency_warnings()
    tcnn_notice_once()
