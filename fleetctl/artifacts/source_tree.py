"""The files that make up a build's source: what is hashed to decide whether a build can be reused and what is
uploaded to a remote build host. Inside a git work tree this honours .gitignore; elsewhere it is every file."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

# Never part of a source tree, whether or not a .gitignore says so.
_ALWAYS_SKIPPED = {".git", "__pycache__", ".venv", "dist"}


def list_source_files(root: Path) -> list[Path]:
    """Relative paths of the files under `root`, sorted; git's view (tracked + untracked, minus ignored) when
    `root` is in a git work tree."""
    root = root.resolve()
    try:
        done = subprocess.run(
            check=False, args=["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
            cwd=root, capture_output=True, timeout=60,
        )
        from_git = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        from_git = False
    if from_git:
        names = [n for n in done.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
        # --cached also lists tracked files deleted from the work tree; they are not part of the source now
        files = [Path(n) for n in names if (root / n).is_file()]
    else:
        files = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
    return sorted(f for f in files if not (set(f.parts) & _ALWAYS_SKIPPED))


def fingerprint(root: Path, files: list[Path], *extra: str) -> str:
    """One sha256 over the files' names and contents plus `extra` build parameters."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part.encode() + b"\0")
    for rel in files:
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()


def tar_gz(root: Path, files: list[Path]) -> bytes:
    """A gzip'd tar of `files` (relative to `root`), with owners and times normalised so equal trees give equal
    archives."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=rel.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(root / rel, "rb") as f:
                tar.addfile(info, f)
    return buffer.getvalue()
