"""The scene cache: results of the edit-independent steps of ``ns-edit``, kept BESIDE the original run and reused by
every later edit of that run (a second edit of a scene skips rendering, cropping, inversion, adjustor and generator
finetuning).

Layout (``<run>`` = the original run's directory, e.g. ``outputs/face/nerfeditor/2024-01-01_000000``)::

    <run>.nerfeditor-cache/             (a sibling of <run>; <run> itself is never written)
        CACHEDIR.TAG                    (marks the folder as a cache: backup tools skip it, `clean` checks for it)
        <step>/<key>/result.pt          (the step's result: tensors and plain containers, loaded weights-only)
        <step>/<key>/files/...          (files the step writes into an edit's directory, e.g. frontal.png)
        <step>/<key>/meta.json          (inputs, seconds it took, when and by which edit it was computed)
        .tmp/                           (entries being written)

``<key>`` hashes everything the result depends on (:mod:`nerfeditor_ns.edit.scene_steps`). An entry is written in
``.tmp/`` and renamed into place in one step, so a reader sees a complete entry or none; when two edits compute the
same entry at once the first rename wins and the other copy is dropped. A damaged entry is recomputed, never fatal.

No torch import at module level (``ns-edit cache list`` runs without it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from nerfeditor_ns.io_utils import atomic_write_text

CACHE_SUFFIX = ".nerfeditor-cache"
"""Suffix of the scene cache folder beside a run: ``<run>.nerfeditor-cache``."""
TAG_FILE = "CACHEDIR.TAG"
TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This folder is the ns-edit scene cache of a nerfeditor run (re-created on demand).\n"
            "# List or remove it with `ns-edit cache list|clean --load-config <run>/config.yml`.\n")
RESULT_FILE = "result.pt"
META_FILE = "meta.json"
FILES_DIR = "files"
TMP_DIR = ".tmp"
STALE_TMP_SECONDS = 3600.0
"""`clean` leaves entries still being written alone unless they are older than this (an edit killed mid-write)."""


def scene_cache_dir(config_path: Path) -> Path:
    """``<run>.nerfeditor-cache`` beside the run whose ``config.yml`` is ``config_path``."""
    run = Path(config_path).absolute().parent
    return run.with_name(run.name + CACHE_SUFFIX)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (copy across file systems); ``dst`` is replaced. Only for files that are never
    rewritten in place (a hard link shares the content)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file + rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def tree_size(path: Path) -> int:
    """Bytes of all files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def human_size(num_bytes: float) -> str:
    """``1.2 MB`` style sizes (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"  # pragma: no cover


@dataclass
class Entry:
    """One finished cache entry."""

    step: str
    key: str
    path: Path
    meta: Dict[str, Any]

    @property
    def result(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def files(self) -> List[str]:
        """Paths (relative to the edit's work directory) of the files stored with the result."""
        return list(self.meta.get("files", []))

    def file(self, relative: str) -> Path:
        return self.path / FILES_DIR / relative

    def touch(self) -> None:
        """Record a use (the entry folder's modification time is its last use)."""
        try:
            os.utime(self.path)
        except OSError:
            pass


class SceneCache:
    """The scene cache folder of one run (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    @classmethod
    def for_run(cls, config_path: Path) -> "SceneCache":
        return cls(scene_cache_dir(config_path))

    def writable(self) -> bool:
        """Whether the cache can be created / written (its parent, the folder holding the run, must be writable)."""
        if self.root.is_dir():
            return os.access(self.root, os.W_OK)
        return self.root.parent.is_dir() and os.access(self.root.parent, os.W_OK)

    def is_cache(self) -> bool:
        """The folder exists and carries the cache tag (never delete a folder that merely has the name)."""
        return (self.root / TAG_FILE).is_file()

    def _ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / TAG_FILE).is_file():
            atomic_write_text(self.root / TAG_FILE, TAG_TEXT)

    # ------------------------------------------------------------------------------------------------ entries
    def lookup(self, step: str, key: str) -> Optional[Entry]:
        """The finished entry of ``step`` with ``key``, or None (also when its metadata is unreadable)."""
        path = self.root / step / key
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not (path / RESULT_FILE).is_file():
            return None
        return Entry(step, key, path, meta)

    def store(self, step: str, key: str, result_file: Path, files: Dict[str, Path], meta: Dict[str, Any]) -> Entry:
        """Add an entry: ``result_file`` (written atomically, so it is hard-linked), ``files`` {relative path: source}
        (copied), ``meta``. Built in ``.tmp/`` and renamed into place; if another edit stored the same entry first,
        that one is kept and returned."""
        self._ensure()
        tmp = self.root / TMP_DIR / f"{step}-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            link_or_copy(Path(result_file), tmp / RESULT_FILE)
            for relative, src in files.items():
                copy_file(Path(src), tmp / FILES_DIR / relative)
            record = dict(meta, step=step, key=key, files=sorted(files), created=time.time())
            (tmp / META_FILE).write_text(json.dumps(record, indent=2, default=str))
            final = self.root / step / key
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                existing = self.lookup(step, key)
                if existing is None:  # not a concurrent twin: a real failure
                    raise
                return existing
            return Entry(step, key, final, record)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def discard(self, entry: Entry) -> None:
        """Remove a damaged entry (moved aside first, so a reader never sees half of it)."""
        aside = self.root / TMP_DIR / f"discard-{entry.step}-{entry.key}-{uuid.uuid4().hex[:8]}"
        try:
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry.path, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def entries(self, steps: Optional[Iterable[str]] = None) -> List[Entry]:
        """Finished entries (all steps, or only ``steps``), oldest first."""
        if not self.root.is_dir():
            return []
        wanted = None if steps is None else set(steps)
        out = []
        for step_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if wanted is not None and step_dir.name not in wanted:
                continue
            for key_dir in sorted(p for p in step_dir.iterdir() if p.is_dir()):
                entry = self.lookup(step_dir.name, key_dir.name)
                if entry is not None:
                    out.append(entry)
        return sorted(out, key=lambda e: float(e.meta.get("created", 0)))

    def pending(self) -> List[Path]:
        """Entries being written (or left by an edit killed while writing)."""
        tmp = self.root / TMP_DIR
        return sorted(tmp.iterdir()) if tmp.is_dir() else []

    def disk_use(self) -> int:
        return tree_size(self.root)

    def clean(self, steps: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Remove the entries (all, or those of ``steps``); with all of them gone the folder itself goes too.

        Entries still being written by a running edit are left alone unless older than :data:`STALE_TMP_SECONDS`.
        Returns ``{"entries": n, "bytes": b, "kept_pending": k, "removed_folder": bool}``."""
        removed, freed, kept = 0, 0, 0
        for entry in self.entries(steps):
            freed += tree_size(entry.path)
            self.discard(entry)
            removed += 1
        if steps is None:
            now = time.time()
            for path in self.pending():
                try:
                    age = now - path.stat().st_mtime
                except OSError:
                    continue
                if age > STALE_TMP_SECONDS:
                    freed += tree_size(path)
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    kept += 1
        for folder in (p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else ():
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        removed_folder = False
        if self.root.is_dir() and {p.name for p in self.root.iterdir()} <= {TAG_FILE}:
            freed += tree_size(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            removed_folder = True
        return {"entries": removed, "bytes": freed, "kept_pending": kept, "removed_folder": removed_folder}
