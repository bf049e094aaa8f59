"""Regenerates manifest-described checkpoints with the deterministic weight RULE of tests/fixtures/README.md (Sec. 4).

Used to build the FFHQ-1024 StyleGAN2, e4e and ArcFace checkpoints in their genuine layouts without shipping them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _base(index: int, shape) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    k = np.arange(n, dtype=np.int64)
    q = (k * k) % 65521
    theta = ((0.5 + 0.37 * index) + 0.0123 * k.astype(np.float64)) + (2.0 * math.pi / 65521.0) * q.astype(np.float64)
    return np.sin(theta).astype(np.float32).reshape(shape)


def rule_state(manifest: dict) -> Dict[str, torch.Tensor]:
    """All entries of a manifest, valued by the RULE (clauses C0-C8), in manifest order."""
    fixed_names = manifest.get("fixed_entries", {}) or {}
    multipliers = manifest.get("equalized_multipliers", {}) or {}
    out: Dict[str, torch.Tensor] = {}
    for i, (name, shape) in enumerate(manifest["entries"]):
        shape = tuple(shape)
        if name.endswith("num_batches_tracked"):  # C0
            out[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        if name in fixed_names:  # C1
            if fixed_names[name] != "K4":
                raise ValueError(f"unknown fixed value {fixed_names[name]!r} for {name}")
            k1 = np.array([1, 3, 3, 1], dtype=np.float32)
            out[name] = torch.from_numpy((np.outer(k1, k1) / np.float32(16)).astype(np.float32).reshape(shape))
            continue
        base = _base(i, shape)
        if name in multipliers:  # C2
            value = np.float32(multipliers[name]) * base
        elif name.endswith("running_var"):  # C3
            value = np.float32(1) + np.float32(0.5) * base * base
        elif name.endswith("running_mean"):  # C4
            value = np.float32(0.1) * base
        elif len(shape) <= 1 and name.endswith("weight"):  # C5
            value = np.float32(1) + np.float32(0.1) * base
        elif len(shape) <= 1 and name.endswith("bias"):  # C6
            value = np.float32(0.1) * base
        elif len(shape) <= 1:  # C7
            value = base
        else:  # C8
            fan_in = int(np.prod(shape[2:])) if len(shape) == 5 else int(np.prod(shape[1:]))
            value = base * np.float32(1.0 / math.sqrt(fan_in))
        out[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return out


def load_manifest(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())
