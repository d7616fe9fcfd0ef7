"""Executable header checks: which OS/architecture a file is built for (PE32+ or ELF), and whether it contains
a given version string. Reads headers only; never runs the file."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from fleetctl.artifacts.errors import ArtifactError

# IMAGE_FILE_HEADER.Machine values, by Go's GOARCH name.
PE_MACHINES = {"amd64": 0x8664, "386": 0x014C, "arm64": 0xAA64, "arm": 0x01C4}
# ELF e_machine values.
ELF_MACHINES = {"amd64": 62, "386": 3, "arm64": 183, "arm": 40}
_PE32_PLUS = 0x20B
_PE32 = 0x10B


@dataclass(frozen=True)
class ExecutableInfo:
    """What a file's header says: format (`PE32+`, `PE32`, `ELF64`, `ELF32`), goos and goarch."""

    format: str
    goos: str
    goarch: str


def inspect_executable(path: Path) -> ExecutableInfo | None:
    """The header's platform, or None when the file is neither a PE nor an ELF executable."""
    with open(path, "rb") as f:
        head = f.read(4096)
        if head[:2] == b"MZ" and len(head) >= 0x40:
            (pe_offset,) = struct.unpack_from("<I", head, 0x3C)
            f.seek(pe_offset)
            pe = f.read(4 + 20 + 2)
            if len(pe) < 26 or pe[:4] != b"PE\0\0":
                return None
            (machine,) = struct.unpack_from("<H", pe, 4)
            (magic,) = struct.unpack_from("<H", pe, 24)
            fmt = {_PE32_PLUS: "PE32+", _PE32: "PE32"}.get(magic)
            if fmt is None:
                return None
            arch = next((a for a, m in PE_MACHINES.items() if m == machine), f"machine-0x{machine:04x}")
            return ExecutableInfo(fmt, "windows", arch)
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        bits = {1: "ELF32", 2: "ELF64"}.get(head[4], "ELF")
        endian = "<" if head[5] == 1 else ">"
        (machine,) = struct.unpack_from(endian + "H", head, 18)
        arch = next((a for a, m in ELF_MACHINES.items() if m == machine), f"machine-{machine}")
        return ExecutableInfo(bits, "linux", arch)
    return None


def contains_bytes(path: Path, needle: bytes, *, chunk: int = 1 << 20) -> bool:
    """Whether `needle` occurs in the file (streamed: a match across chunk borders is found too)."""
    if not needle:
        return True
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            data = tail + block
            if needle in data:
                return True
            tail = data[-(len(needle) - 1):] if len(needle) > 1 else b""
    return False


def verify_executable(path: Path, goos: str, goarch: str, *, version: str | None = None) -> ExecutableInfo:
    """Check that `path` is an executable for goos/goarch (PE32+ for 64-bit Windows) and holds `version`."""
    info = inspect_executable(path)
    if info is None:
        raise ArtifactError(f"{path} is not an executable (neither PE nor ELF)")
    if info.goos != goos or info.goarch != goarch:
        raise ArtifactError(f"{path} is a {info.format} {info.goos}/{info.goarch} executable, "
                            f"expected {goos}/{goarch}")
    if goos == "windows" and goarch in ("amd64", "arm64") and info.format != "PE32+":
        raise ArtifactError(f"{path} is {info.format}, expected PE32+ for windows/{goarch}")
    if version is not None and not contains_bytes(path, version.encode()):
        raise ArtifactError(f"{path} does not contain the version string {version!r}: is the version variable "
                            "right (artifact.build.go.version_var)?", key="artifact.build.go.version_var")
    return info
