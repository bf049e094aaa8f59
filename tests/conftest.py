"""Shared test settings.

Torch's intra-op thread count is set once here (not per test module at import time): the CI machine has 2 cores,
and nerfstudio's tests spawn no worker processes in the tiny preset. Override with NERFEDITOR_TEST_THREADS.
Individual tests that need a specific count (e.g. bit-exact comparisons) set and restore it themselves.

The session fixtures ``tiny_workspace`` and ``reference_edit`` build the tiny trained run and its ns-edit once
(tests/helpers/tiny_runs.py) for the end-to-end edit tests and the tests of nerfstudio's tools.
"""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("NERFEDITOR_TEST_THREADS", str(min(2, os.cpu_count() or 1)))))


# ---------------------------------------------------------------------------------------------------------------------
# Tiny runs shared by the end-to-end edit tests and the tests of nerfstudio's tools (built once per session).


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """A trained tiny nerfeditor run + a cache with a slim hidden mapper (tests/helpers/tiny_runs.py)."""
    from tests.helpers.tiny_runs import make_workspace

    return make_workspace(tmp_path_factory.mktemp("tiny_runs"))


@pytest.fixture(scope="session")
def reference_edit(tiny_workspace):
    """The tiny run edited with a reference image through ns-edit: the new run's folder."""
    from tests.helpers.tiny_runs import make_reference_edit

    return make_reference_edit(tiny_workspace)
