"""Shared test settings.

Torch's intra-op thread count is set once here (not per test module at import time): the CI machine has 2 cores,
and nerfstudio's tests spawn no worker processes in the tiny preset. Override with NERFEDITOR_TEST_THREADS.
Individual tests that need a specific count (e.g. bit-exact comparisons) set and restore it themselves.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("NERFEDITOR_TEST_THREADS", str(min(2, os.cpu_count() or 1)))))
