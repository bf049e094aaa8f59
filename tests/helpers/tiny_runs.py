"""Tiny nerfeditor runs for tests: a trained ``nerfeditor-tiny`` run, a slim hidden mapper and an ns-edit of it.

Built once per test session by the fixtures in ``tests/conftest.py`` (``tiny_workspace``, ``reference_edit``) and
shared by the end-to-end edit tests and the tests of nerfstudio's own tools on an edited run. Sizes are tiny (64 px
renders, 32 px generator, a few dozen optimisation steps): the runs exercise the plumbing, not edit quality.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data" / "face_small"
TINY_G = ROOT / "tests" / "fixtures" / "stylegan2_rosinality_tiny.pt"
REFERENCE = ROOT / "tests" / "data" / "faces256" / "3.jpg"
TRAIN_STEPS = 120
FINETUNE_STEPS = 30

SMALL = [
    "--num-in-yaw", "3", "--num-in-pitch", "1", "--num-out-domain", "2",
    "--projection-steps", "15", "--adjustor-steps", "8", "--adjustor-batch", "2", "--num-components", "4",
    "--finetune-steps", str(FINETUNE_STEPS), "--video-frames", "4", "--mapper-steps", "5", "--device", "cpu",
    "--render-chunk", "4096", "--render-scale", "0.5", "--generator-finetune-steps", "5",
]
"""ns-edit flags that keep an edit of the tiny run at CPU-test size."""

# --mix-layer 1: a change well above the noise of 30 finetuning steps. At layer 2 the guides move the foreground by only
# 0.021 (L1) and the L1 after finetuning ranged 0.021-0.033 with the random stream alone (measured); at layer 1 they
# move it by 0.075 and finetuning brings it to 0.053
# --edit-region everywhere: the tiny run's viewer camera (test_ns_tools) frames mostly background, which the default
# edit region keeps exactly the original; this one edit lets the residual act everywhere so every tool sees a change
# (the default region is tested by the other edits and by test_edit_region.py)
REFERENCE_EDIT = ["--reference-image", str(REFERENCE), "--mix-layer", "1", "--edit-region", "everywhere"]
"""The edit of :func:`make_reference_edit`."""


def tree_digest(root: Path) -> Dict[str, str]:
    """SHA-256 of every file under ``root`` (to check that a run was not modified)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def train_tiny(data: Path, output_dir: Path, timestamp: str, steps: int) -> Path:
    """Train ``nerfeditor-tiny`` on ``data`` for ``steps`` steps on the CPU (seed 0, no event writers: an open
    tensorboard writer would keep appending to the run); returns its config.yml."""
    import torch

    from nerfeditor_ns.method_configs import nerfeditor_tiny

    torch.manual_seed(0)
    cfg = copy.deepcopy(nerfeditor_tiny.config)
    cfg.data = cfg.pipeline.datamanager.data = data
    cfg.output_dir, cfg.timestamp, cfg.max_num_iterations = output_dir, timestamp, steps
    cfg.machine.device_type = "cpu"
    cfg.vis = "none"
    cfg.logging.local_writer.enable = False
    cfg.save_config()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return cfg.get_base_dir() / "config.yml"


def make_workspace(root: Path) -> Dict[str, Any]:
    """A trained tiny run (``TRAIN_STEPS`` steps on ``DATA``) and a cache with a slim hidden mapper for ``TINY_G``."""
    from nerfeditor_ns.edit import cli

    config_path = train_tiny(DATA, root / "outputs", "run", TRAIN_STEPS)

    cache = root / "cache"
    # the mapper is trained ahead of time through the real subcommand (slim backbone, a few steps)
    assert cli.main(["train-mapper", "--generator", str(TINY_G), "--slim", "--steps", "6", "--batch", "2",
                     "--cache-dir", str(cache), "--device", "cpu"]) == 0
    assert list((cache / "hidden_mappers").glob("*.pt"))
    return {"root": root, "config": config_path, "run": config_path.parent, "cache": cache,
            "digest": tree_digest(config_path.parent)}


def edit_argv(ws: Dict[str, Any], *edit: str, out: str) -> List[str]:
    """ns-edit argv editing the workspace's run into ``ws["root"] / out`` at test size."""
    return ["--load-config", str(ws["config"]), "--generator", str(TINY_G), "--cache-dir", str(ws["cache"]),
            "--output-dir", str(ws["root"] / out), *SMALL, *edit]


def make_reference_edit(ws: Dict[str, Any], out: str = "edit_ref") -> Path:
    """Edit the workspace's run with ``REFERENCE_EDIT`` through the real ns-edit entry point; the new run's folder."""
    from nerfeditor_ns.edit import cli

    assert cli.main(edit_argv(ws, *REFERENCE_EDIT, out=out)) == 0
    return ws["root"] / out
