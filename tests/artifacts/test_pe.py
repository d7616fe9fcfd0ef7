"""Executable header checks on synthetic headers and on the real cross-compiled example."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.manifest import Manifest
from fleetctl.artifacts.pe import contains_bytes, inspect_executable, verify_executable


def _pe(path: Path, machine: int, magic: int) -> Path:
    dos = bytearray(0x80)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    header = b"PE\0\0" + struct.pack("<HHIIIHH", machine, 3, 0, 0, 0, 0xF0, 0x22) + struct.pack("<H", magic)
    path.write_bytes(bytes(dos) + header + b"\0" * 512)
    return path


def _elf(path: Path, machine: int) -> Path:
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    head[4], head[5] = 2, 1
    struct.pack_into("<H", head, 18, machine)
    path.write_bytes(bytes(head))
    return path


def test_pe32_plus_amd64(tmp_path: Path) -> None:
    info = inspect_executable(_pe(tmp_path / "a.exe", 0x8664, 0x20B))
    assert (info.format, info.goos, info.goarch) == ("PE32+", "windows", "amd64")  # type: ignore[union-attr]


def test_pe32_i386_is_refused_for_amd64(tmp_path: Path) -> None:
    exe = _pe(tmp_path / "a.exe", 0x14C, 0x10B)
    assert inspect_executable(exe).goarch == "386"  # type: ignore[union-attr]
    with pytest.raises(ArtifactError, match="PE32 windows/386 executable, expected windows/amd64"):
        verify_executable(exe, "windows", "amd64")


def test_elf_amd64(tmp_path: Path) -> None:
    info = inspect_executable(_elf(tmp_path / "a", 62))
    assert (info.format, info.goos, info.goarch) == ("ELF64", "linux", "amd64")  # type: ignore[union-attr]


@pytest.mark.parametrize("content", [b"", b"MZ", b"hello world" * 10, b"MZ" + b"\0" * 0x3A + b"\xff\xff\0\0"])
def test_not_an_executable(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "x"
    f.write_bytes(content)
    assert inspect_executable(f) is None
    with pytest.raises(ArtifactError, match="not an executable"):
        verify_executable(f, "windows", "amd64")


def test_contains_bytes_across_chunk_border(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"x" * 1000 + b"v1.2.3" + b"y" * 1000)
    assert contains_bytes(f, b"v1.2.3", chunk=1003)  # the needle straddles two chunks
    assert not contains_bytes(f, b"v1.2.4", chunk=1003)


def test_real_example_is_pe32_plus_with_version(hello_windows: Manifest) -> None:
    info = verify_executable(hello_windows.path, "windows", "amd64", version=hello_windows.version)
    assert info.format == "PE32+"
    with pytest.raises(ArtifactError, match="does not contain the version string"):
        verify_executable(hello_windows.path, "windows", "amd64", version="9.8.7-not-there")
    with pytest.raises(ArtifactError, match="expected linux/amd64"):
        verify_executable(hello_windows.path, "linux", "amd64")
