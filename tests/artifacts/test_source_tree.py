"""Which files make up a source tree (git's view when in a work tree) and its fingerprint."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from fleetctl.artifacts.source_tree import fingerprint, list_source_files, tar_gz


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "main.go").write_text("package main\n")
    (root / "pkg" / "a.go").write_text("package pkg\n")
    (root / "debug.log").write_text("noise\n")
    (root / ".gitignore").write_text("*.log\n")


def test_git_work_tree_honours_gitignore(tmp_path: Path) -> None:
    _tree(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert list_source_files(tmp_path) == [Path(".gitignore"), Path("main.go"), Path("pkg/a.go")]
    # a subdirectory of the work tree lists paths relative to itself
    assert list_source_files(tmp_path / "pkg") == [Path("a.go")]


def test_plain_directory_lists_every_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert Path("debug.log") in list_source_files(tmp_path)


def test_fingerprint_changes_with_content_and_parameters(tmp_path: Path) -> None:
    _tree(tmp_path)
    files = list_source_files(tmp_path)
    first = fingerprint(tmp_path, files, "1.0")
    assert fingerprint(tmp_path, files, "1.0") == first
    assert fingerprint(tmp_path, files, "1.1") != first
    (tmp_path / "main.go").write_text("package main // changed\n")
    assert fingerprint(tmp_path, files, "1.0") != first


def test_archive_is_reproducible_and_complete(tmp_path: Path) -> None:
    _tree(tmp_path)
    files = list_source_files(tmp_path)
    data = tar_gz(tmp_path, files)
    assert tar_gz(tmp_path, files) == data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == sorted(f.as_posix() for f in files)
