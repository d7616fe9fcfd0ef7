"""A lab node's drives: Windows paths mapped onto a directory tree, with the Windows file semantics a deployer meets.

`<root>/C/...` stands for `C:\\...`. What is modelled because deploys depend on it:
- paths are case-insensitive (an existing entry is found whatever the case asked for);
- a file that a running process was started from is *in use*: writing, renaming over or deleting it (or a
  directory holding it) fails with FILE_IN_USE, as a Windows sharing violation does;
- directory junctions (stored as symlinks to absolute paths): repointing is atomic, deleting a junction never
  touches its target, a tree walk never follows one;
- free space: a simulated capacity minus the bytes stored; a disk-full fault makes it zero, and writes fail with
  DISK_FULL.
Writes are atomic (temp file + rename), as the node module's are.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from fleetctl.lab.nodeerror import NodeError

DEFAULT_CAPACITY_BYTES = 64 * 1024**3
_DRIVE_PATH = re.compile(r"^([A-Za-z]):[\\/](.*)$", re.DOTALL)


def is_windows_path(text: str) -> bool:
    """Whether `text` is an absolute drive path such as `C:\\apps\\hello`."""
    return bool(_DRIVE_PATH.match(text))


class Sandbox:
    """One node's drives under `root`; thread-safe."""

    def __init__(self, root: Path, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        self.root = root.resolve()
        self.capacity_bytes = capacity_bytes
        self.disk_full = False  # set by the disk-full fault
        self._lock = threading.RLock()
        self._in_use: dict[Path, int] = {}  # real path of a running exe -> number of processes using it
        (self.root / "C").mkdir(parents=True, exist_ok=True)

    # ---- paths -------------------------------------------------------------------------------------------
    def resolve(self, windows_path: str) -> Path:
        """The sandbox path for an absolute Windows path; existing components are matched case-insensitively."""
        match = _DRIVE_PATH.match(windows_path or "")
        if not match:
            raise NodeError("INVALID_ARGUMENT", f"not an absolute Windows path: {windows_path!r}",
                            {"path": windows_path})
        drive, rest = match.group(1).upper(), match.group(2)
        parts = [p for p in re.split(r"[\\/]+", rest) if p and p != "."]
        if any(p == ".." for p in parts) or any(c in p for p in parts for c in '<>:"|?*\0'):
            raise NodeError("INVALID_ARGUMENT", f"unusable Windows path: {windows_path!r}", {"path": windows_path})
        current = self.root / drive
        for part in parts:
            # Windows ignores trailing dots and spaces in names; so must we, or `foo.` and `foo` would differ.
            part = part.rstrip(" .") or part
            candidate = current / part
            if not os.path.lexists(candidate) and current.is_dir():
                lowered = part.lower()
                for entry in os.scandir(current):
                    if entry.name.lower() == lowered:
                        candidate = current / entry.name
                        break
            current = candidate
        return current

    def to_windows(self, path: Path) -> str:
        """The Windows path of a sandbox path (the inverse of `resolve`)."""
        rel = Path(os.path.abspath(path)).relative_to(self.root)
        drive, *rest = rel.parts
        return f"{drive}:\\" + "\\".join(rest)

    # ---- files in use (sharing violations) ---------------------------------------------------------------
    def mark_in_use(self, path: Path) -> Path:
        """Record that a process runs from `path` (through junctions: the real file); returns the real path."""
        real = Path(os.path.realpath(path))
        with self._lock:
            self._in_use[real] = self._in_use.get(real, 0) + 1
        return real

    def release(self, real: Path) -> None:
        with self._lock:
            count = self._in_use.get(real, 0) - 1
            if count <= 0:
                self._in_use.pop(real, None)
            else:
                self._in_use[real] = count

    def files_in_use_under(self, path: Path) -> list[Path]:
        """Running exes at or below `path`; a junction at `path` itself is not followed (deleting it is fine)."""
        base = Path(os.path.abspath(path))
        if base.is_symlink():
            return []
        real = Path(os.path.realpath(base))
        with self._lock:
            return [p for p in self._in_use if p == real or real in p.parents]

    def check_not_in_use(self, path: Path, action: str) -> None:
        busy = self.files_in_use_under(path)
        if busy:
            first = self.to_windows(busy[0]) if self.root in busy[0].parents else str(busy[0])
            raise NodeError(
                "FILE_IN_USE",
                f"cannot {action} {self.to_windows(path)}: {first} is in use by a running process "
                "(sharing violation)",
                {"path": self.to_windows(path), "in_use": first},
            )

    # ---- space -------------------------------------------------------------------------------------------
    def used_bytes(self) -> int:
        total = 0
        # Only drive directories count: the lab keeps its own records (service output) beside them.
        stack = [e.path for e in os.scandir(self.root) if len(e.name) == 1 and e.is_dir(follow_symlinks=False)]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        try:
                            total += entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            pass  # a temp file renamed away meanwhile
        return total

    def free_bytes(self) -> int:
        if self.disk_full:
            return 0
        return max(0, self.capacity_bytes - self.used_bytes())

    def ensure_space(self, needed: int, what: str) -> None:
        free = self.free_bytes()
        if self.disk_full or needed > free:
            raise NodeError("DISK_FULL", f"not enough free space on C: to store {what} "
                            f"({needed} bytes needed, {free} free)", {"needed": needed, "free": free})

    # ---- reading and writing -----------------------------------------------------------------------------
    def read_bytes(self, windows_path: str) -> bytes:
        path = self.resolve(windows_path)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NodeError("NOT_FOUND", f"no such file: {windows_path}", {"path": windows_path}) from None

    def write_bytes(self, windows_path: str, data: bytes) -> None:
        """Atomically create or replace a file (temp + rename); fails if the file is in use or the disk full."""
        self.write_path(self.resolve(windows_path), data)

    def write_path(self, path: Path, data: bytes) -> Path:
        self.check_not_in_use(path, "overwrite")
        self.ensure_space(len(data), self.to_windows(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def move_into_place(self, source: Path, target: Path) -> None:
        """Atomically rename a finished temp file onto `target` (same drive)."""
        self.check_not_in_use(target, "replace")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def copy_file(self, source: Path, target: Path) -> None:
        size = source.stat().st_size
        self.check_not_in_use(target, "overwrite")
        self.ensure_space(size, self.to_windows(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, path: Path) -> None:
        """Delete a file, a junction (never its target) or a directory tree (never following junctions).

        Refused up front with FILE_IN_USE when a running exe lies below; Windows would delete what it can
        before failing, the lab deletes nothing, which is the safer reading for a deployer.
        """
        if not os.path.lexists(path):
            return
        self.check_not_in_use(path, "delete")
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path)

    # ---- junctions ---------------------------------------------------------------------------------------
    def set_junction(self, link: Path, target: Path) -> None:
        """Create or atomically repoint a directory junction `link` -> `target` (which must be a directory)."""
        if not target.is_dir():
            raise NodeError("NOT_FOUND", f"junction target is not a directory: {self.to_windows(target)}")
        if link.exists() and not link.is_symlink():
            raise NodeError("INVALID_ARGUMENT", f"{self.to_windows(link)} exists and is not a junction")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.junction")
        os.symlink(os.path.abspath(target), tmp, target_is_directory=True)
        # Replacing the link, not the directory it points to: a process running from the old target keeps
        # running (on Windows, too, a junction can be repointed under a running exe).
        os.replace(tmp, link)

    def read_junction(self, link: Path) -> Path | None:
        if not link.is_symlink():
            return None
        return Path(os.readlink(link))

    def walk_files(self, path: Path) -> Iterable[Path]:
        for dirpath, _dirs, files in os.walk(path):  # os.walk does not follow symlinks by default
            for name in files:
                yield Path(dirpath) / name
