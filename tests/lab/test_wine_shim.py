"""The ProcessPrng shim for Wines without bcryptprimitives.dll: reading PE exports, telling Wine's own DLL from
anything else, the build cached by source hash, installing it into a prefix only where Wine lacks the function,
and the one clear error when it cannot be built and a Go >= 1.22 exe is started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from node_kit import call, install, next_address, ok

from fleetctl.lab import wine_shim
from fleetctl.lab.node import LabNode
from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.wine import WinePrefix
from fleetctl.lab.wine_shim import (
    ShimUnavailable,
    build_shim,
    ensure_process_prng,
    needs_process_prng,
    pe_exports,
    wine_provides,
)

ROOT = "C:\\apps\\hello"
WINE_DLLS = Path("/usr/lib/x86_64-linux-gnu/wine/x86_64-windows")
needs_mingw = pytest.mark.skipif(shutil.which(wine_shim.MINGW_CC) is None,
                                 reason=f"{wine_shim.MINGW_CC} missing (scripts/bootstrap installs it)")


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(wine_shim.MINGW_CC) is None:
        pytest.skip(f"{wine_shim.MINGW_CC} missing (scripts/bootstrap installs {wine_shim.MINGW_PACKAGE})")
    return build_shim(tmp_path_factory.mktemp("shim-cache"))


def _as_wine_builtin(dll: bytes) -> bytes:
    """The same DLL carrying Wine's builtin marker in its DOS stub, as every DLL Wine builds does."""
    return dll[:0x40] + b"Wine builtin DLL" + dll[0x50:]


def test_the_shim_exports_process_prng_and_is_not_wines(shim: Path) -> None:
    assert pe_exports(shim.read_bytes()) == {"ProcessPrng"}
    assert not wine_provides(shim)  # ours: never mistaken for Wine providing the function


def test_wines_own_dll_is_recognised_only_with_the_export(shim: Path, tmp_path: Path) -> None:
    builtin = tmp_path / "bcryptprimitives.dll"
    builtin.write_bytes(_as_wine_builtin(shim.read_bytes()))
    assert pe_exports(builtin.read_bytes()) == {"ProcessPrng"}  # the marker does not disturb the PE headers
    assert wine_provides(builtin)
    assert not wine_provides(tmp_path / "missing.dll")
    if (WINE_DLLS / "bcrypt.dll").is_file():  # a real Wine builtin that lacks the export
        assert "BCryptGenRandom" in pe_exports((WINE_DLLS / "bcrypt.dll").read_bytes())
        assert not wine_provides(WINE_DLLS / "bcrypt.dll")


@pytest.mark.parametrize("data", [b"", b"MZ", b"MZ" + b"\0" * 100, b"\x7fELF" + b"\0" * 200, b"x" * 5000])
def test_pe_exports_of_anything_else_is_empty(data: bytes) -> None:
    assert pe_exports(data) == set()


def test_which_exes_need_process_prng(tmp_path: Path) -> None:
    go_runtime = tmp_path / "go122.exe"  # Go >= 1.22's runtime names the DLL in UTF-16
    go_runtime.write_bytes(b"MZ..." + "BCryptPrimitives.dll\0".encode("utf-16-le") + b"...")
    rust_std = tmp_path / "rust.exe"  # Rust's std imports it by its ASCII name
    rust_std.write_bytes(b"MZ...bcryptprimitives.dll\0...")
    old_go = tmp_path / "go119.exe"
    old_go.write_bytes(b"MZ...advapi32.dll\0 SystemFunction036 ...")
    assert needs_process_prng(go_runtime) and needs_process_prng(rust_std)
    assert not needs_process_prng(old_go) and not needs_process_prng(tmp_path / "missing.exe")


@needs_mingw
def test_the_build_is_cached_by_source_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = build_shim(cache)
    # cached: found again without a compiler at all
    assert build_shim(cache, compiler="/nonexistent/x86_64-w64-mingw32-gcc") == first
    changed = tmp_path / "bcryptprimitives.c"
    changed.write_text(wine_shim.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(wine_shim, "SOURCE", changed)
    second = build_shim(cache)
    assert second != first and second.is_file() and first.is_file()
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, second.name])  # no partial files left


def test_no_compiler_is_one_clear_error_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(ShimUnavailable, match="nope-gcc not found \\(install the Debian package "
                                              "gcc-mingw-w64-x86-64\\)"):
        build_shim(tmp_path / "empty-cache", compiler="nope-gcc")


def _prefix_dir(tmp_path: Path) -> Path:
    system32 = tmp_path / "prefix" / "drive_c" / "windows" / "system32"
    system32.mkdir(parents=True)
    return tmp_path / "prefix"


@needs_mingw
def test_installed_where_wine_lacks_the_function_and_kept_up_to_date(tmp_path: Path) -> None:
    prefix = _prefix_dir(tmp_path)
    target = prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll"
    state = ensure_process_prng(prefix, tmp_path / "cache")
    assert (state.source, state.ok) == ("shim", True)
    assert pe_exports(target.read_bytes()) == {"ProcessPrng"}
    target.write_bytes(b"an older shim")
    assert ensure_process_prng(prefix, tmp_path / "cache").source == "shim"
    assert pe_exports(target.read_bytes()) == {"ProcessPrng"}


def test_left_alone_where_wine_has_the_function(shim: Path, tmp_path: Path) -> None:
    """Wine 9 and later: wineboot put Wine's own bcryptprimitives.dll in system32; nothing is built or copied."""
    prefix = _prefix_dir(tmp_path)
    target = prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll"
    wines = _as_wine_builtin(shim.read_bytes())
    target.write_bytes(wines)
    state = ensure_process_prng(prefix, tmp_path / "cache", compiler="/nonexistent/gcc")
    assert (state.source, state.ok) == ("wine", True)
    assert target.read_bytes() == wines and not (tmp_path / "cache").exists()


def _unshimmable_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WinePrefix:
    """A prefix that counts as created (marker present) in a Wine without the function, and no compiler."""
    prefix = _prefix_dir(tmp_path)
    (prefix / ".fleetctl-prepared").write_text("ok\n")
    monkeypatch.setattr(wine_shim, "MINGW_CC", "/nonexistent/x86_64-w64-mingw32-gcc")
    return WinePrefix(prefix, wine64="/bin/true", wineserver=str(tmp_path / "none"), shim_cache=tmp_path / "empty")


def _pe(payload: bytes) -> bytes:
    return b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 64 + payload


def test_without_a_compiler_only_exes_that_need_process_prng_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wine = _unshimmable_prefix(tmp_path, monkeypatch)
    modern, old = tmp_path / "modern.exe", tmp_path / "old.exe"
    modern.write_bytes(_pe("bcryptprimitives.dll\0".encode("utf-16-le")))
    old.write_bytes(_pe(b"advapi32.dll\0"))
    wine.wait_ready(timeout=30, exe=old)
    assert wine.process_prng is not None and wine.process_prng.source == "missing"
    with pytest.raises(NodeError) as err:
        wine.wait_ready(timeout=30, exe=modern)
    assert err.value.code == "SERVICE_START_FAILED"
    assert "modern.exe needs ProcessPrng from bcryptprimitives.dll" in str(err.value)
    assert "install the Debian package gcc-mingw-w64-x86-64" in str(err.value)


def test_a_node_starting_such_an_exe_fails_the_start_clearly_and_stays_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = LabNode("lab-node07", next_address(), tmp_path / "lab-node07", wine=_unshimmable_prefix(tmp_path, monkeypatch))
    try:
        install(node, _pe("bcryptprimitives.dll\0".encode("utf-16-le")), "1.0-go126")
        ok(node, "Set-FleetService", Name="hello", BinaryPath=f"{ROOT}\\current\\hello.exe")
        answer = call(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
        assert answer["error"]["code"] == "SERVICE_START_FAILED"
        assert "gcc-mingw-w64-x86-64" in answer["error"]["message"]
        assert node.scm.status("hello")["state"] == "Stopped" and node.scm.pids() == []
    finally:
        node.close()
