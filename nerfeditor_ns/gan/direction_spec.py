"""The ``--direction`` grammar and its parser (no torch import: ``ns-edit`` checks the flag before loading anything).

    pc:INDEX:STRENGTH[:START-END]     principal component INDEX of the decomposition (Eqs. 7-9), STRENGTH in standard
                                      deviations, e.g. pc:7:+3 or pc:0:-2:0-4
    FILE.pt:STRENGTH[:START-END]      a saved latent direction, e.g. smile.pt:2.0

``START-END`` restricts the edit to the W+ rows [START, END). :func:`nerfeditor_ns.gan.edits.apply_direction_spec`
applies a parsed spec to a code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

__all__ = ["DirectionSpec", "parse_direction_spec", "DIRECTION_GRAMMAR"]

#: the grammar in one line, for error messages and help texts
DIRECTION_GRAMMAR = "pc:INDEX:STRENGTH[:START-END] or FILE.pt:STRENGTH[:START-END]"


@dataclass(frozen=True)
class DirectionSpec:
    """A parsed ``--direction`` value."""

    kind: str
    """"pc" (principal component of W) or "file" (a saved direction)."""
    strength: float
    """Strength: in standard deviations for "pc", in the file's units for "file"."""
    component: Optional[int] = None
    """Component index (0-based) for "pc"."""
    path: Optional[Path] = None
    """Direction file for "file"."""
    layers: Optional[Tuple[int, int]] = None
    """Rows [start, end) of the W+ code to edit; None = all rows."""


_SPEC_HELP = (
    "expected 'pc:<component>:<strength>[:<start>-<end>]' (e.g. pc:7:+3 or pc:0:-2:0-4) or "
    "'<file.pt>:<strength>[:<start>-<end>]' (e.g. smile.pt:2.0)"
)
_LAYERS_RE = re.compile(r"^(\d+)-(\d+)$")


def _parse_float(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"direction spec {spec!r}: strength {text!r} is not a number; {_SPEC_HELP}.") from None
    if not math.isfinite(value):
        raise ValueError(f"direction spec {spec!r}: strength must be finite; {_SPEC_HELP}.")
    return value


def parse_direction_spec(spec: str) -> DirectionSpec:
    """Parses ``"pc:7:+3"`` (component 7, +3 standard deviations) or ``"file.pt:2.0"`` (file, strength 2), each
    with an optional row range suffix ``":start-end"``. Raises ValueError naming the problem and the format."""
    text = spec.strip()
    if not text:
        raise ValueError(f"empty direction spec; {_SPEC_HELP}.")
    parts = text.split(":")
    layers = None
    if len(parts) >= 3 and _LAYERS_RE.match(parts[-1]):
        m = _LAYERS_RE.match(parts[-1])
        layers = (int(m.group(1)), int(m.group(2)))
        if layers[0] >= layers[1]:
            raise ValueError(f"direction spec {spec!r}: layer range {parts[-1]} must have start < end.")
        parts = parts[:-1]
    if parts[0].lower() == "pc":
        if len(parts) != 3:
            raise ValueError(f"direction spec {spec!r}: {_SPEC_HELP}.")
        if not re.fullmatch(r"\d+", parts[1]):
            raise ValueError(f"direction spec {spec!r}: component {parts[1]!r} is not a non-negative integer.")
        return DirectionSpec("pc", _parse_float(parts[2], spec), component=int(parts[1]), layers=layers)
    if len(parts) < 2:
        raise ValueError(f"direction spec {spec!r} has no strength; {_SPEC_HELP}.")
    path_text = ":".join(parts[:-1])  # paths may contain ':' (e.g. Windows drives)
    if not path_text:
        raise ValueError(f"direction spec {spec!r} has no file; {_SPEC_HELP}.")
    return DirectionSpec("file", _parse_float(parts[-1], spec), path=Path(path_text), layers=layers)
