"""Where ``ns-edit`` keeps trained hidden mappers and which cached one it may use (one policy for the edit steps,
``ns-edit train-mapper`` and the demo).

A cache entry is ``<cache root>/hidden_mappers/<SHA-256 of the generator file>-<settings key>.pt``
(:func:`nerfeditor_ns.gan.hidden_mapper.hidden_mapper_cache_path`); it may be used when
:func:`nerfeditor_ns.gan.hidden_mapper.is_finished_mapper` says its training finished. A damaged entry is skipped,
never fatal (``train-mapper`` retrains it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

MAPPER_SUBDIR = "hidden_mappers"


def mapper_cache_dir(root: Optional[Path]) -> Optional[Path]:
    """``<cache root>/hidden_mappers`` (None = the hidden mapper module's default)."""
    return None if root is None else Path(root) / MAPPER_SUBDIR


def mapper_config(vgg: Optional[Path], steps: int, slim: bool, seed: int = 0, batch: Optional[int] = None,
                  resolution: Optional[int] = None):
    """Hidden mapper settings used by ns-edit and ns-edit train-mapper (slim = narrow, shallow backbone)."""
    from nerfeditor_ns.gan.hidden_mapper import HiddenMapperConfig

    cfg = HiddenMapperConfig(num_iterations=int(steps), vgg_weights=None if slim else vgg, seed=seed)
    if slim:
        cfg.backbone_width_mult = 0.125
        cfg.backbone_stages = 3
        cfg.head_channels = 32
    if batch is not None:
        cfg.batch_size = int(batch)
    if resolution is not None:
        cfg.resolutions = (int(resolution),)
    cfg.save_every = max(1, min(cfg.save_every, int(steps)))
    return cfg


def cached_mapper_path(generator_path: Path, root: Optional[Path], config) -> Path:
    """The cache file for ``generator_path`` trained with ``config`` (it may not exist yet)."""
    from nerfeditor_ns.gan.hidden_mapper import hidden_mapper_cache_path

    return hidden_mapper_cache_path(generator_path, mapper_cache_dir(root), config)


def finished_mapper(path: Path) -> Optional[Path]:
    """``path`` when it is a finished hidden mapper (the one policy), else None."""
    from nerfeditor_ns.gan.hidden_mapper import is_finished_mapper

    return Path(path) if is_finished_mapper(path) else None


def find_cached_mapper(root: Optional[Path], generator_path: Path) -> Optional[Path]:
    """Newest finished cached mapper trained for this generator file (any settings), if any."""
    from nerfeditor_ns.gan import hidden_mapper as hm
    from nerfeditor_ns.io_utils import file_sha256

    directory = mapper_cache_dir(root) or hm.default_cache_dir()
    if not directory.is_dir():
        return None
    sha = file_sha256(generator_path)
    for path in sorted(directory.glob(f"{sha}-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        if hm.is_finished_mapper(path):
            return path
    return None
