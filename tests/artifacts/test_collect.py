"""Collecting artifacts: local path and glob (0, 1, 2 matches), URL with sha256 (served by a local HTTP server),
and ssh:// over SFTP against a real sshd."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifacts_support import NET, SshServer

from fleetctl.artifacts.collect import collect_path, collect_ssh, collect_url, find_single
from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.manifest import Manifest, load_manifest, manifest_path


def test_path_and_single_glob_match(hello_windows: Manifest, tmp_path: Path) -> None:
    shutil.copy(hello_windows.path, tmp_path / "svc-build-77.exe")
    for pattern in ("svc-build-77.exe", "svc-*.exe", str(tmp_path / "*.exe")):
        m = collect_path(pattern, name="svc", version="7.7", base_dir=tmp_path, dist_dir=tmp_path / "dist")
        assert m.path.name == "svc-7.7-windows-amd64.exe" and m.sha256 == hello_windows.sha256
        assert m.source == "collect:path"
        assert load_manifest(manifest_path(tmp_path / "dist", "svc", "7.7")) == m


def test_glob_with_no_match_or_two_matches(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no file matches '\*.exe'"):
        find_single("*.exe", tmp_path)
    (tmp_path / "a.exe").write_text("a")
    (tmp_path / "b.exe").write_text("b")
    with pytest.raises(ArtifactError, match=r"(?s)matches 2 files, expected exactly one:.*a.exe.*b.exe") as err:
        find_single("*.exe", tmp_path)
    assert err.value.key == "artifact.collect.path"


def test_path_with_wrong_sha256_or_not_an_exe(hello_windows: Manifest, tmp_path: Path) -> None:
    shutil.copy(hello_windows.path, tmp_path / "a.exe")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        collect_path("a.exe", name="a", version="1", base_dir=tmp_path, dist_dir=tmp_path / "dist", sha256="0" * 64)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="not an executable"):
        collect_path("notes.txt", name="a", version="1", base_dir=tmp_path, dist_dir=tmp_path / "dist")


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer((f"{NET}.3", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://{NET}.3:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_with_right_and_wrong_sha256(hello_windows: Manifest, http_dir: tuple[Path, str],
                                         tmp_path: Path) -> None:
    root, base = http_dir
    shutil.copy(hello_windows.path, root / "hello.exe")
    dist = tmp_path / "dist"
    m = collect_url(f"{base}/hello.exe", hello_windows.sha256, name="hello", version="8.0", dist_dir=dist)
    assert m.sha256 == hello_windows.sha256 and m.source == "collect:url"
    assert m.path == (dist / "hello-8.0-windows-amd64.exe").resolve()
    with pytest.raises(ArtifactError, match="sha256 mismatch .* refusing it"):
        collect_url(f"{base}/hello.exe", "f" * 64, name="hello", version="8.1", dist_dir=dist)
    assert not (dist / "hello-8.1-windows-amd64.exe").exists() and not list(dist.glob(".*download"))
    with pytest.raises(ArtifactError, match="HTTP 404"):
        collect_url(f"{base}/missing.exe", "f" * 64, name="hello", version="8.2", dist_dir=dist)
    with pytest.raises(ArtifactError, match="unsupported URL scheme 'ftp'"):
        collect_url("ftp://x/y", "f" * 64, name="hello", version="8.2", dist_dir=dist)


@pytest.mark.ssh
def test_ssh_collect_over_sftp(hello_windows: Manifest, sshd: SshServer, tmp_path: Path) -> None:
    m = collect_ssh(f"ssh://buildhost{hello_windows.path}", hostvars=sshd.hostvars(), name="hello", version="9.0",
                    dist_dir=tmp_path / "dist", sha256=hello_windows.sha256)
    assert m.sha256 == hello_windows.sha256 and m.source == "collect:ssh" and m.goos == "windows"
    with pytest.raises(ArtifactError, match="does not exist on buildhost"):
        collect_ssh("ssh://buildhost/no/such/file.exe", hostvars=sshd.hostvars(), name="hello", version="9.1",
                    dist_dir=tmp_path / "dist")
