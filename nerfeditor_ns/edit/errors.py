"""User-facing errors of ``ns-edit``.

Every mistake a user can make (a wrong path, a missing network, an unreadable image, an occupied output directory,
running out of memory) is raised as an :class:`EditError` whose message names the problem *and* the fix. The CLI
prints the message and exits with a non-zero status instead of showing a traceback.

This module is imported by the CLI before argument parsing: it must not import torch or nerfstudio at module level.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional, Sequence

#: Environment variable used by tests (and by users debugging resume) to stop an edit right after a step's cached
#: result has been written, as if the process had been killed there. Value: a step name, e.g. ``invert``.
STOP_AFTER_ENV = "NERFEDITOR_EDIT_STOP_AFTER"


class EditError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    def __init__(self, problem: str, fix: Optional[str] = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  Fix: {fix}")


class MissingNetworkError(EditError):
    """A network file that the chosen edit needs was not given (or does not exist)."""


class NotANerfEditorRunError(EditError):
    """The ``--load-config`` file is not the config of a trained nerfeditor run."""


class OutputExistsError(EditError):
    """The output directory exists already and ``--overwrite`` was not given."""


class EditInterrupted(RuntimeError):
    """Raised after a step when :data:`STOP_AFTER_ENV` names it (simulates a killed process; used by resume tests)."""


def check_stop_after(step_name: str) -> None:
    """Stop the edit here if the ``NERFEDITOR_EDIT_STOP_AFTER`` hook names this step."""
    if os.environ.get(STOP_AFTER_ENV, "") == step_name:
        raise EditInterrupted(f"stopped after step '{step_name}' ({STOP_AFTER_ENV}={step_name})")


@contextlib.contextmanager
def out_of_memory_hint(step_name: str, flags: Sequence[str]) -> Iterator[None]:
    """Turn ``torch.OutOfMemoryError`` inside a step into an :class:`EditError` naming the flags that lower memory."""
    import torch  # local: keep `ns-edit --help` fast

    oom_types = tuple(
        t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
    )
    try:
        yield
    except oom_types as err:  # type: ignore[misc]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise EditError(
            f"Out of memory during step '{step_name}' ({str(err).splitlines()[0] if str(err) else 'no details'}).",
            "lower memory use with " + ", ".join(flags) + " (or run on a device with more memory).",
        ) from err
