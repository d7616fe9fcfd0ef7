"""Fixtures for artifact tests: the example service built once per session (Windows and Linux), a shared Wine
prefix, a real sshd on loopback with throwaway keys, and small playbooks. Addresses come from
FLEETCTL_TEST_ARTIFACTS_NET (default 127.0.40)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifacts_support import HELLO_SRC, NET, REPO, SSHD, TEST_VERSION, WINE64, SshServer

from fleetctl.artifacts.build import build_go
from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import GoToolchain, find_go
from fleetctl.artifacts.manifest import Manifest
from fleetctl.config.playbook import GoBuild
from fleetctl.lab.wine import WinePrefix
from tests.support import free_port, wait_for


@pytest.fixture(scope="session")
def go_toolchain() -> GoToolchain:
    """The Go that `fleetctl build` uses for the example (skips the test where there is none)."""
    try:
        return find_go(HELLO_SRC)
    except ArtifactError as err:
        pytest.skip(f"{err} (scripts/bootstrap installs one)")


@pytest.fixture(scope="session")
def go_available(go_toolchain: GoToolchain) -> None:
    """Tests that build with fleetctl only need a usable Go to exist."""


@pytest.fixture(scope="session")
def built_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="session")
def hello_windows(go_available: None, built_dist: Path) -> Manifest:
    """The example built for windows/amd64 once per session (the first build costs ~15 s)."""
    return build_go(GoBuild(dir=str(HELLO_SRC)), name="hello", version=TEST_VERSION, base_dir=REPO,
                    dist_dir=built_dist)


@pytest.fixture(scope="session")
def hello_linux(go_available: None, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    # its own dist: the manifest file name (<name>-<version>.json) does not include the platform
    return build_go(GoBuild(dir=str(HELLO_SRC), goos="linux"), name="hello", version=TEST_VERSION, base_dir=REPO,
                    dist_dir=tmp_path_factory.mktemp("dist-linux"))


@pytest.fixture(scope="session")
def wine_prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Wine prefix shared by the session's tests, prepared exactly as the lab prepares its own (created by the
    first run, ~20 s; the ProcessPrng shim where this Wine lacks it); its wineserver is stopped at the end."""
    if not Path(WINE64).exists():
        pytest.skip(f"{WINE64} not found (scripts/bootstrap installs wine64)")
    prefix = WinePrefix(tmp_path_factory.mktemp("wineprefix"), wine64=WINE64,
                        wineserver=str(Path(WINE64).with_name("wineserver")))
    prefix.wait_ready()
    try:
        yield {**os.environ, **prefix.env()}
    finally:
        prefix.shutdown()


# --- sshd -------------------------------------------------------------------------------------------------------


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetctl-test", "-f", str(path)],
                   check=True, capture_output=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real `sshd -D` on 127.0.40.x as the current user, throwaway host and user keys, key auth only."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (scripts/bootstrap installs it)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key", "other_key"):
        _keygen(d / key)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    address = f"{NET}.2"
    port = free_port(address)
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[{address}]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {address}:{port}",
        f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        f"PidFile {d / 'sshd.pid'}",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "Subsystem sftp internal-sftp",
        "LogLevel ERROR",
        "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"sshd exited with {proc.returncode}: {out}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(listening, 15, "sshd to listen")
    import getpass
    server = SshServer(address, port, getpass.getuser(), d / "client_key", d / "known_hosts", d / "other_key", proc)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
