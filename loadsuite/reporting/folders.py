"""Run folders that never mix two runs: each created atomically under one name nobody else holds, and `latest`.

`os.mkdir` (never `exist_ok`) either creates the folder or fails because it exists: two runs started in the same
second get two folders (`20261202T101500Z`, then `20261202T101500Z-01`, ...), so each reads back only its own
files. `latest` is a symbolic link replaced with one rename (`os.replace`), never removed first; the folder and
the link are made under one lock (`.latest.lock`, bounded wait), so `latest` always names the run created last.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LATEST = "latest"
LOCK = ".latest.lock"
LOCK_WAIT_S = 10.0
MAX_SUFFIX = 99


FIX = "free space, fix permissions or set RESULTS_ROOT"


class FolderError(Exception):
    """The folder or the link could not be made; the text says why and what to do, in one line."""


def _why(error: OSError) -> str:
    return f"{error.strerror or type(error).__name__}: {FIX}"


def new_run_folder(root: Path, stamp: str) -> Path:
    """root/stamp, or root/stamp-NN when another run holds that name: created here, by this call alone."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FolderError(f"cannot create {root} ({_why(error)})") from None
    names = [stamp, *(f"{stamp}-{n:02d}" for n in range(1, MAX_SUFFIX + 1)), f"{stamp}-{os.getpid()}"]
    for name in names:
        folder = root / name
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as error:
            raise FolderError(f"cannot create {folder} ({_why(error)})") from None
    raise FolderError(f"cannot create a new folder in {root}: {len(names)} runs already hold {stamp}*: wait a second")


def point_latest(root: Path, folder: Path) -> None:
    """root/latest -> folder (relative), replaced atomically; a real folder or file named latest is never touched."""
    root = Path(root)
    latest = root / LATEST
    if not latest.is_symlink() and latest.exists():
        kind = "folder" if latest.is_dir() else "file"
        raise FolderError(f"{latest} is a real {kind}, not a link, so it cannot name the newest run: rename or "
                          "remove it")
    temporary = root / f".{LATEST}-{os.getpid()}"
    try:
        if temporary.is_symlink():
            temporary.unlink()
        os.symlink(folder.name, temporary)
        os.replace(temporary, latest)  # rename(2): readers see the old link or the new one, never none
    except OSError as error:
        try:
            temporary.unlink()
        except OSError:
            pass
        raise FolderError(f"cannot point {latest} at {folder.name} ({_why(error)})") from None


def start_run(root: Path, stamp: str, wait_s: float = LOCK_WAIT_S) -> Path:
    """A new run folder under root and `latest` naming it, both under the lock (so `latest` names the run created
    last). A folder made for a run whose `latest` cannot be set is removed again: no run starts that lies."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / LOCK, "a")
    except OSError as error:
        raise FolderError(f"cannot create {root / LOCK} ({_why(error)})") from None
    with lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FolderError(f"{root / LOCK} stayed locked for {wait_s:g} s by another run") from None
                time.sleep(0.01)
        folder = new_run_folder(root, stamp)
        try:
            point_latest(root, folder)
        except FolderError:
            folder.rmdir()
            raise
        return folder  # the lock goes with the file
