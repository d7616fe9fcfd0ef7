"""Artifact transfer: skip / push / pull / auto, chunking and compression (fake node), and against lab nodes:
pushed, skipped on the second try, pulled over HTTPS pinning the per-deploy CA, and a corrupted transfer refused by
checksum with nothing kept."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetctl.artifacts.pull_server import PullServer
from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.templating import render_vars
from fleetctl.errors import ConfigError
from fleetctl.node.client import NodeClient
from fleetctl.node.transfer import ensure_artifact, forget_prepared
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.transport.base import Transport
from fleetctl.transport.fake import FakeNode, FakeTransport

NET = os.environ.get("FLEETCTL_TEST_TRANSFER_NET", "127.0.31")


def write_artifact(path: Path, size: int = 300_000, seed: bytes = b"fleet") -> str:
    # Half compressible text, half incompressible bytes: like an exe, gzip helps but not totally.
    block = hashlib.sha256(seed).digest()
    noise = b"".join(hashlib.sha256(block + i.to_bytes(4, "big")).digest() for i in range(size // 64))
    data = (b"MZ" + b"text section " * (size // 26))[: size // 2] + noise[: size - size // 2]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    forget_prepared()
    yield
    forget_prepared()


# -- against the fake node ---------------------------------------------------------------------------------------

def test_push_then_skip_with_chunks_that_fit_the_transport(tmp_path: Path) -> None:
    sha = write_artifact(tmp_path / "a.exe")
    node = FakeNode()
    transport = FakeTransport(node, max_input_object_bytes=4096)
    seen: list[tuple[int, int]] = []
    first = ensure_artifact(NodeClient(transport), tmp_path / "a.exe", sha, "push",
                            progress=lambda d, t: seen.append((d, t)))
    assert first.method == "push" and node.artifacts[sha] == (tmp_path / "a.exe").read_bytes()
    receive = transport.calls[-1]
    assert receive.operation == "Receive-FleetArtifact" and receive.params["Compression"] == "gzip"
    assert all(len(c) <= 4096 * 4 // 3 + 4 for c in receive.input_objects or [])
    assert first.bytes_sent < 300_000 * 0.8  # compressed
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    second = ensure_artifact(NodeClient(transport), tmp_path / "a.exe", sha, "push")
    assert second.method == "skipped" and second.bytes_sent == 0
    assert transport.operations()[-1] == "Test-FleetArtifact"


def test_incompressible_artifact_is_sent_uncompressed(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    (tmp_path / "r.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    transport = FakeTransport(FakeNode())
    ensure_artifact(NodeClient(transport), tmp_path / "r.bin", sha, "push")
    assert transport.calls[-1].params["Compression"] == "none"


def test_artifact_is_compressed_once_for_many_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.node import transfer

    sha = write_artifact(tmp_path / "a.exe")
    calls: list[int] = []
    real = transfer.gzip.compress
    monkeypatch.setattr(transfer.gzip, "compress", lambda data, **kw: calls.append(1) or real(data, **kw))
    nodes = [FakeNode() for _ in range(8)]
    threads = [threading.Thread(target=ensure_artifact, args=(NodeClient(FakeTransport(n)), tmp_path / "a.exe",
                                                               sha, "push")) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(sha in n.artifacts for n in nodes)


def test_auto_pulls_and_falls_back_to_push_when_the_node_cannot_download(tmp_path: Path) -> None:
    sha = write_artifact(tmp_path / "a.exe")
    with PullServer(f"{NET}.200") as server:
        reachable = FakeNode(urls={server.url_for(sha): (tmp_path / "a.exe").read_bytes()})
        assert ensure_artifact(NodeClient(FakeTransport(reachable)), tmp_path / "a.exe", sha, "auto",
                               pull_server=server).method == "pull"
        cut_off = FakeNode()
        assert ensure_artifact(NodeClient(FakeTransport(cut_off)), tmp_path / "a.exe", sha, "auto",
                               pull_server=server).method == "push"
        with pytest.raises(NodeOperationError) as info:
            ensure_artifact(NodeClient(FakeTransport(FakeNode())), tmp_path / "a.exe", sha, "pull",
                            pull_server=server)
        assert info.value.code == "DOWNLOAD_FAILED"


def test_url_mode_has_the_node_download_and_the_controller_send_nothing(tmp_path: Path) -> None:
    from fleetctl.artifacts.url_artifact import ArtifactUrl

    data = b"MZ" + b"x" * 5000
    sha = hashlib.sha256(data).hexdigest()
    url = "https://repo.example/hello/1.0.0/hello.exe?X-Amz-Signature=abc123def"
    node = FakeNode(urls={url: data})
    transport = FakeTransport(node)
    source = ArtifactUrl(url, sha, len(data), ca_pem="-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
                         token="repo-token-xyz")
    first = ensure_artifact(NodeClient(transport), source, sha, "url")
    assert first.method == "url" and first.bytes_sent == 0 and node.artifacts[sha] == data
    call = transport.calls[-1]
    assert call.operation == "Save-FleetArtifactFromUrl"
    assert call.params == {"Url": url, "Sha256": sha, "Size": len(data), "Token": "repo-token-xyz",
                           "CaCertificate": source.ca_pem}
    assert not any(c.operation == "Receive-FleetArtifact" for c in transport.calls)
    assert ensure_artifact(NodeClient(transport), source, sha, "url").method == "skipped"
    # No fallback to push: the controller has no copy. A download the node cannot make fails the transfer.
    missing = ArtifactUrl("https://repo.example/gone", "ab" * 32, 10)
    with pytest.raises(NodeOperationError) as caught:
        ensure_artifact(NodeClient(FakeTransport(FakeNode())), missing, "ab" * 32, "url")
    assert caught.value.code == "DOWNLOAD_FAILED"
    with pytest.raises(ConfigError, match="only with transfer: url"):
        ensure_artifact(NodeClient(transport), source, sha, "auto")


def test_url_mode_pushes_a_file_of_the_controllers_own(tmp_path: Path) -> None:
    # nssm.exe is shipped by fleetctl, not kept in the artifact repository: under transfer: url it is pushed.
    sha = write_artifact(tmp_path / "nssm.exe", size=5000)
    node = FakeNode()
    transport = FakeTransport(node)
    assert ensure_artifact(NodeClient(transport), tmp_path / "nssm.exe", sha, "url").method == "push"
    assert [c.operation for c in transport.calls] == ["Test-FleetArtifact", "Receive-FleetArtifact"]


def test_bad_input_is_a_config_error(tmp_path: Path) -> None:
    sha = write_artifact(tmp_path / "a.exe")
    client = NodeClient(FakeTransport(FakeNode()))
    with pytest.raises(ConfigError, match="manifest says"):
        ensure_artifact(client, tmp_path / "a.exe", "0" * 64, "push")
    with pytest.raises(ConfigError, match="pull needs"):
        ensure_artifact(client, tmp_path / "a.exe", sha, "pull")
    with pytest.raises(ConfigError, match="one of push, pull, auto"):
        ensure_artifact(client, tmp_path / "a.exe", sha, "ftp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot read"):
        ensure_artifact(client, tmp_path / "missing.exe", sha, "push")


# -- against lab nodes -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ConnectionSettings]]:
    from fleetctl.config.inventory import load_inventory
    from fleetctl.lab.control import lab_down, lab_up
    from fleetctl.lab.layout import LabLayout

    layout = LabLayout.at(tmp_path_factory.mktemp("xferlab"))
    lab_up(layout, nodes=3, base=f"{NET}.1", wine=False)
    try:
        inventory = load_inventory([layout.dir / "inventory.yml"])
        yield {h.name: ConnectionSettings.from_hostvars(h.name, render_vars(dict(h.vars), source="lab"))
               for h in inventory.select("all")}
    finally:
        lab_down(layout)


def lab_client(lab: dict[str, ConnectionSettings], index: int) -> NodeClient:
    from fleetctl.transport.winrm import WinRMTransport

    return NodeClient(WinRMTransport(list(lab.values())[index]))


@pytest.mark.lab
def test_lab_push_then_skip(lab: dict[str, ConnectionSettings], tmp_path: Path) -> None:
    sha = write_artifact(tmp_path / "app.exe", 2_000_000)
    client = lab_client(lab, 0)
    try:
        pushed = ensure_artifact(client, tmp_path / "app.exe", sha, "push")
        assert pushed.method == "push" and pushed.path
        status = client.test_fleet_artifact(sha256=sha)
        assert status.present and status.size == 2_000_000
        again = ensure_artifact(client, tmp_path / "app.exe", sha, "auto")
        assert again.method == "skipped"
    finally:
        client.close()


@pytest.mark.lab
def test_lab_pull_over_https_with_the_pinned_ca(lab: dict[str, ConnectionSettings], tmp_path: Path) -> None:
    from fleetctl import pki

    sha = write_artifact(tmp_path / "app.exe", 1_000_000, seed=b"pull")
    client = lab_client(lab, 1)
    try:
        with PullServer(f"{NET}.200") as server:
            assert server.url_for(sha).startswith("https://") and server.ca_pem
            server.add(tmp_path / "app.exe", sha)
            # Without the per-deploy CA, or pinning another one, the node refuses the server: the pin is what works.
            stranger = pki.new_ca("someone else", "elsewhere").cert_pem.decode()
            for ca_pem in (None, stranger):
                with pytest.raises(NodeOperationError) as info:
                    client.save_fleet_artifact_from_url(url=server.url_for(sha), sha256=sha, size=1_000_000,
                                                        token=server.token, ca_certificate=ca_pem)
                assert info.value.code == "DOWNLOAD_FAILED" and server.token not in str(info.value)
            assert server.requests_served == 0 and not client.test_fleet_artifact(sha256=sha).present
            pulled = ensure_artifact(client, tmp_path / "app.exe", sha, "pull", pull_server=server)
            assert pulled.method == "pull" and server.requests_served == 1
        assert client.test_fleet_artifact(sha256=sha).present
    finally:
        client.close()


class CorruptingTransport(Transport):
    """Wraps a real transport and flips one byte of the pushed data on its way: a corrupted transfer."""

    def __init__(self, inner: Transport) -> None:
        self.inner, self.host = inner, inner.host

    @property
    def max_input_object_bytes(self) -> int:
        return self.inner.max_input_object_bytes

    def invoke(self, operation: str, params: dict[str, Any], input_objects: Iterable[str] | None = None) -> Any:
        if input_objects is not None:
            chunks = list(input_objects)
            middle = chunks[len(chunks) // 2]
            flipped = "A" if middle[10] != "A" else "B"
            chunks[len(chunks) // 2] = middle[:10] + flipped + middle[11:]
            input_objects = chunks
        return self.inner.invoke(operation, params, input_objects)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.lab
def test_lab_corrupted_push_is_refused_and_nothing_kept(lab: dict[str, ConnectionSettings], tmp_path: Path) -> None:
    from fleetctl.transport.winrm import WinRMTransport

    sha = write_artifact(tmp_path / "app.exe", 1_500_000, seed=b"corrupt")
    client = NodeClient(CorruptingTransport(WinRMTransport(list(lab.values())[2])))
    try:
        with pytest.raises(NodeOperationError) as info:
            ensure_artifact(client, tmp_path / "app.exe", sha, "push")
        assert info.value.code == "CHECKSUM_MISMATCH"
        assert not client.test_fleet_artifact(sha256=sha).present
    finally:
        client.close()


@pytest.mark.lab
def test_lab_corrupted_or_unauthorised_pull_keeps_nothing(lab: dict[str, ConnectionSettings],
                                                          tmp_path: Path) -> None:
    sha = write_artifact(tmp_path / "app.exe", 500_000, seed=b"real")
    write_artifact(tmp_path / "evil.exe", 500_000, seed=b"evil")
    client = lab_client(lab, 2)
    try:
        with PullServer(f"{NET}.200") as server:
            server.add(tmp_path / "evil.exe", sha)  # serves other bytes under the expected hash
            with pytest.raises(NodeOperationError) as info:
                client.save_fleet_artifact_from_url(url=server.url_for(sha), sha256=sha, size=500_000,
                                                    token=server.token, ca_certificate=server.ca_pem)
            assert info.value.code == "CHECKSUM_MISMATCH"
            with pytest.raises(NodeOperationError) as info:
                client.save_fleet_artifact_from_url(url=server.url_for(sha), sha256=sha, size=500_000,
                                                    token="not-the-token", ca_certificate=server.ca_pem)
            assert info.value.code == "DOWNLOAD_FAILED"
            assert server.token not in str(info.value)
        assert not client.test_fleet_artifact(sha256=sha).present
    finally:
        client.close()
