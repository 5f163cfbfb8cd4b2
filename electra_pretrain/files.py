"""Artefacts written whole or not at all, and verified where they are read.

A folder is written under a temporary name beside its place, every file and the folder fsynced, then renamed into
place (`publish_folder`); an earlier folder of that name is moved aside first and removed only once the new one is
in place, so a kill or a full disk at any moment leaves the old folder or the new one, never a mix. Each published
model folder carries `checksums.json`, the sha256 of its files, checked when the folder is read (`verify_folder`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CHECKSUMS_FILE = "checksums.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(folder: Path, leave_out: tuple[str, ...] = (CHECKSUMS_FILE,)) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path, but the ones named in `leave_out`."""
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in leave_out
    }


def verify_checksums(folder: Path, expected: dict[str, str], source: str) -> None:
    """Each listed file exists and matches its sha256; the first that does not is named."""
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{path}: missing, though {source} lists it (an incomplete copy?)")
        if sha256(path) != digest:
            raise ValueError(
                f"{path}: does not match its checksum in {source} (damaged or changed since it was "
                "written; --no-verify, or verify_checksums=false, reads it anyway)"
            )


def verify_folder(folder: Path) -> None:
    """Check a published folder against its checksums.json (folders written before there was one pass)."""
    manifest = folder / CHECKSUMS_FILE
    if manifest.is_file():
        verify_checksums(folder, json.loads(manifest.read_text()), str(manifest))


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (e.g. a rename inside it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for path in [*sorted(folder.rglob("*"), reverse=True), folder]:
        fsync(path)


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """An empty folder beside `target` to write its new content into; removed if the writing fails."""
    staged = target.with_name(f".tmp_{target.name}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def publish_folder(staged: Path, target: Path, with_checksums: bool = True) -> Path:
    """Put the staged folder at `target` in one rename, after writing its checksums.json and fsyncing it."""
    if with_checksums:
        (staged / CHECKSUMS_FILE).write_text(json.dumps(checksums(staged), indent=1) + "\n")
    fsync_tree(staged)
    old = target.with_name(f".old_{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def publish_file(staged: Path, target: Path) -> Path:
    """Put a staged file at `target` in one rename (os.replace), fsynced."""
    fsync(staged)
    staged.replace(target)
    fsync(target.parent)
    return target
