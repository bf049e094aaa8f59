"""Loss histories of the GAN-side training loops without a host synchronisation every step.

``float(loss)`` on a CUDA tensor waits for the GPU to finish the step; done every step it keeps the CPU from
queueing the next one. :class:`LossLog` keeps the detached loss tensors and turns them into numbers every
``every`` steps (one transfer for the whole window), where the loops also check that the losses are finite. The
numbers are the same as ``float(loss)`` per step (the same tensors, read later), so results do not change.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor


class LossLog:
    """Per-step losses by name, read back every ``every`` steps (and at :meth:`flush`).

    Args:
        history: the lists to append to, by name (the loops' ``history`` dicts; missing names are added).
        every: steps between read-backs (1 = every step).
    """

    def __init__(self, history: Dict[str, List[float]], every: int) -> None:
        self.history = history
        self.every = max(1, int(every))
        self._pending: List[Tuple[int, Dict[str, Tensor]]] = []

    def add(self, step: int, **losses: Tensor) -> None:
        """Record this step's losses (detached tensors, or plain floats)."""
        device = next((v.device for v in losses.values() if isinstance(v, Tensor)), torch.device("cpu"))
        self._pending.append((step, {k: torch.as_tensor(v, device=device).detach().reshape(()).double()
                                     for k, v in losses.items()}))

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def flush(self) -> Optional[Tuple[int, str, float]]:
        """Append the pending losses to the history as floats (one device-to-host copy). Returns (step, name,
        value) of the first non-finite ``total``-like loss (the first key of each step), else None."""
        if not self._pending:
            return None
        names = list(self._pending[0][1])
        # float64 holds every float32 / float64 loss exactly: the same numbers as float(loss) per step
        values = torch.stack([torch.stack([losses[n] for n in names]) for _, losses in self._pending]).cpu().tolist()
        bad = None
        for (step, _), row in zip(self._pending, values):
            for name, value in zip(names, row):
                self.history.setdefault(name, []).append(value)
            if bad is None and not math.isfinite(row[0]):
                bad = (step, names[0], row[0])
        self._pending.clear()
        return bad
