"""ProcessPrng for Wines that lack it: since Go 1.22 a Windows exe loads bcryptprimitives.dll at start-up and
dies without it ("fatal error: bcryptprimitives.dll not found"); Wine added the DLL in 9.0. Where the prefix's
Wine has no such export, a one-function shim (shim/bcryptprimitives.c) is cross-built with MinGW, cached by
source hash, and copied into the prefix's system32. It lives only in the lab's prefix, never on a node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("shim") / "bcryptprimitives.c"
DLL_NAME = "bcryptprimitives.dll"
EXPORT = "ProcessPrng"
MINGW_CC = os.environ.get("FLEETCTL_MINGW_CC", "x86_64-w64-mingw32-gcc")
MINGW_PACKAGE = "gcc-mingw-w64-x86-64"
_CFLAGS = ("-O2", "-shared", "-s")
_LIBS = ("-ladvapi32",)
_COMPILE_TIMEOUT_S = 120.0
# Every DLL Wine builds carries this after its DOS header; a DLL that someone put there (our shim) does not.
_WINE_BUILTIN = b"Wine builtin DLL"


@dataclass(frozen=True)
class ProcessPrng:
    """How a prefix provides ProcessPrng: `wine` (its own DLL), `shim` (ours, installed), or `missing`, with
    `problem` saying why the shim could not be installed."""

    source: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.source != "missing"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fleetctl" / "wine-shim"


def ensure_process_prng(prefix: Path, cache_dir: Path | None = None, compiler: str | None = None) -> ProcessPrng:
    """Make ProcessPrng loadable in an initialised prefix; never raises for a missing compiler (the caller
    refuses, with the returned problem, only the exes that need the function)."""
    target = prefix / "drive_c" / "windows" / "system32" / DLL_NAME
    if wine_provides(target):
        return ProcessPrng("wine")
    try:
        dll = build_shim(cache_dir or default_cache_dir(), compiler or MINGW_CC)
    except ShimUnavailable as err:
        return ProcessPrng("missing", str(err))
    if not (target.is_file() and _sha256(target) == _sha256(dll)):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{DLL_NAME}.{os.getpid()}.partial")
        shutil.copyfile(dll, partial)
        os.replace(partial, target)
    return ProcessPrng("shim")


def wine_provides(dll: Path) -> bool:
    """Whether `dll` (a system32 file that wineboot put there) is Wine's own and exports ProcessPrng."""
    try:
        data = dll.read_bytes()
    except OSError:
        return False
    return _WINE_BUILTIN in data[:0x200] and EXPORT in pe_exports(data)


class ShimUnavailable(Exception):
    """The shim cannot be built here; the message names what to install."""


def build_shim(cache_dir: Path, compiler: str | None = None) -> Path:
    """The shim DLL for the current source, compiled once per source hash into cache_dir."""
    compiler = compiler or MINGW_CC
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + "\0".join((*_CFLAGS, *_LIBS)).encode()).hexdigest()[:16]
    dll = cache_dir / f"bcryptprimitives-{key}.dll"
    if dll.is_file():
        return dll
    if shutil.which(compiler) is None:
        raise ShimUnavailable(f"{compiler} not found (install the Debian package {MINGW_PACKAGE})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A private output name, renamed into place: labs on one machine may build at the same time.
    fd, partial = tempfile.mkstemp(prefix=".bcryptprimitives-", suffix=".dll", dir=cache_dir)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *_CFLAGS, "-o", partial, str(SOURCE), *_LIBS], capture_output=True,
                              text=True, errors="replace", timeout=_COMPILE_TIMEOUT_S, check=False)
        if done.returncode != 0 or EXPORT not in pe_exports(Path(partial).read_bytes()):
            raise ShimUnavailable(f"building {SOURCE.name} with {compiler} failed (exit {done.returncode}): "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")
        os.replace(partial, dll)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ShimUnavailable(f"building {SOURCE.name} with {compiler} failed: {err}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return dll


def needs_process_prng(exe: Path) -> bool:
    """Whether an exe names bcryptprimitives.dll, as Go >= 1.22's runtime (UTF-16) and Rust's std (import
    table) do; such an exe cannot start without the function."""
    try:
        data = exe.read_bytes().lower()
    except OSError:
        return False
    return DLL_NAME.encode() in data or DLL_NAME.encode("utf-16-le") in data


def pe_exports(data: bytes) -> set[str]:
    """The names a PE image exports (empty for anything else), read from its export directory."""
    try:
        if data[:2] != b"MZ":
            return set()
        pe = struct.unpack_from("<I", data, 0x3C)[0]
        if data[pe:pe + 4] != b"PE\0\0":
            return set()
        sections_count = struct.unpack_from("<H", data, pe + 6)[0]
        optional_size = struct.unpack_from("<H", data, pe + 20)[0]
        optional = pe + 24
        magic = struct.unpack_from("<H", data, optional)[0]
        directories = optional + (112 if magic == 0x20B else 96)  # PE32+ or PE32
        export_rva = struct.unpack_from("<I", data, directories)[0]
        if export_rva == 0:
            return set()
        sections = []
        for i in range(sections_count):
            at = optional + optional_size + 40 * i
            virtual_size, virtual_address, raw_size, raw_pointer = struct.unpack_from("<IIII", data, at + 8)
            sections.append((virtual_address, max(virtual_size, raw_size), raw_pointer))

        def offset(rva: int) -> int:
            for start, size, raw in sections:
                if start <= rva < start + size:
                    return rva - start + raw
            raise ValueError(f"RVA {rva:#x} is in no section")

        directory = offset(export_rva)
        # IMAGE_EXPORT_DIRECTORY: NumberOfNames at +24, AddressOfNames at +32
        names_count = struct.unpack_from("<I", data, directory + 24)[0]
        names_rva = struct.unpack_from("<I", data, directory + 32)[0]
        table = offset(names_rva)
        names = set()
        for i in range(names_count):
            start = offset(struct.unpack_from("<I", data, table + 4 * i)[0])
            names.add(data[start:data.index(b"\0", start)].decode("ascii", "replace"))
        return names
    except (struct.error, ValueError):
        return set()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
