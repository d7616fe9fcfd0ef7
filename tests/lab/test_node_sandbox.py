"""The lab node's drives: Windows paths, atomic writes, junctions, sharing violations, free space."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.sandbox import Sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path / "node", capacity_bytes=10_000)


def test_windows_paths_map_under_the_drive_directory_case_insensitively(sandbox: Sandbox) -> None:
    sandbox.write_bytes("C:\\Apps\\Hello\\app.conf", b"x")
    assert sandbox.resolve("c:/apps/HELLO/App.Conf") == sandbox.root / "C" / "Apps" / "Hello" / "app.conf"
    assert sandbox.read_bytes("C:\\APPS\\hello\\APP.CONF") == b"x"
    assert sandbox.to_windows(sandbox.resolve("C:\\Apps\\Hello")) == "C:\\Apps\\Hello"


@pytest.mark.parametrize("bad", ["apps\\hello", "\\\\server\\share\\x", "C:\\apps\\..\\..\\etc", "C:\\a\\b?c", ""])
def test_relative_escaping_or_invalid_paths_are_refused(sandbox: Sandbox, bad: str) -> None:
    with pytest.raises(NodeError) as err:
        sandbox.resolve(bad)
    assert err.value.code == "INVALID_ARGUMENT"


def test_missing_file_is_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(NodeError) as err:
        sandbox.read_bytes("C:\\nope.txt")
    assert err.value.code == "NOT_FOUND"


def test_writes_are_atomic_and_leave_no_temp_files(sandbox: Sandbox) -> None:
    sandbox.write_bytes("C:\\d\\f.txt", b"one")
    sandbox.write_bytes("C:\\d\\f.txt", b"two")
    assert os.listdir(sandbox.resolve("C:\\d")) == ["f.txt"]
    assert sandbox.read_bytes("C:\\d\\f.txt") == b"two"


def test_a_running_exe_cannot_be_overwritten_renamed_over_or_deleted(sandbox: Sandbox) -> None:
    exe = sandbox.write_path(sandbox.resolve("C:\\apps\\r1\\hello.exe"), b"MZ")
    real = sandbox.mark_in_use(exe)
    for action in (lambda: sandbox.write_bytes("C:\\apps\\r1\\hello.exe", b"new"),
                   lambda: sandbox.remove(exe),
                   lambda: sandbox.remove(sandbox.resolve("C:\\apps")),
                   lambda: sandbox.move_into_place(sandbox.write_path(sandbox.resolve("C:\\tmp.bin"), b"y"), exe)):
        with pytest.raises(NodeError) as err:
            action()
        assert err.value.code == "FILE_IN_USE"
        assert "sharing violation" in err.value.message
    assert exe.read_bytes() == b"MZ"
    sandbox.release(real)
    sandbox.remove(sandbox.resolve("C:\\apps"))
    assert not exe.exists()


def test_exe_run_through_a_junction_locks_the_real_file_not_the_junction(sandbox: Sandbox) -> None:
    r1 = sandbox.write_path(sandbox.resolve("C:\\apps\\releases\\r1\\hello.exe"), b"1").parent
    r2 = sandbox.write_path(sandbox.resolve("C:\\apps\\releases\\r2\\hello.exe"), b"2").parent
    current = sandbox.resolve("C:\\apps\\current")
    sandbox.set_junction(current, r1)
    sandbox.mark_in_use(sandbox.resolve("C:\\apps\\current\\hello.exe"))
    # Repointing the junction under a running exe is allowed (Windows allows it too) ...
    sandbox.set_junction(current, r2)
    assert sandbox.read_bytes("C:\\apps\\current\\hello.exe") == b"2"
    # ... but the release it runs from stays locked.
    with pytest.raises(NodeError):
        sandbox.remove(r1)


def test_deleting_a_junction_never_deletes_its_target(sandbox: Sandbox) -> None:
    target = sandbox.write_path(sandbox.resolve("C:\\data\\keep.txt"), b"k").parent
    link = sandbox.resolve("C:\\link")
    sandbox.set_junction(link, target)
    assert sandbox.read_junction(link) == target.absolute()
    holder = sandbox.resolve("C:\\holder")
    holder.mkdir()
    sandbox.set_junction(holder / "inner", target)
    sandbox.remove(holder)  # a tree holding a junction: the junction goes, its target stays
    sandbox.remove(link)
    assert (target / "keep.txt").read_bytes() == b"k"


def test_junction_to_a_missing_directory_or_over_a_real_directory_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(NodeError) as err:
        sandbox.set_junction(sandbox.resolve("C:\\l"), sandbox.resolve("C:\\missing"))
    assert err.value.code == "NOT_FOUND"
    real_dir = sandbox.resolve("C:\\real")
    real_dir.mkdir()
    with pytest.raises(NodeError) as err:
        sandbox.set_junction(real_dir, sandbox.resolve("C:\\"))
    assert err.value.code == "INVALID_ARGUMENT"


def test_free_space_shrinks_with_stored_bytes_and_a_full_disk_refuses_writes(sandbox: Sandbox) -> None:
    before = sandbox.free_bytes()
    sandbox.write_bytes("C:\\f.bin", b"x" * 1000)
    assert sandbox.free_bytes() == before - 1000
    with pytest.raises(NodeError) as err:
        sandbox.write_bytes("C:\\big.bin", b"x" * 20_000)
    assert err.value.code == "DISK_FULL"
    sandbox.disk_full = True
    assert sandbox.free_bytes() == 0
    with pytest.raises(NodeError) as err:
        sandbox.write_bytes("C:\\small.bin", b"x")
    assert err.value.code == "DISK_FULL"
