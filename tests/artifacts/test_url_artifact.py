"""`transfer: url` described from the playbook alone: what a node needs is checked before any host is contacted
(one ConfigError naming the file and key), the CA file is read, and a presigned URL's signature and the token are
secrets from then on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl import pki
from fleetctl.artifacts.url_artifact import url_artifact
from fleetctl.config.playbook import Playbook, load_playbook
from fleetctl.config.redaction import forget_secrets, redact
from fleetctl.errors import ConfigError

SHA = "3f" * 32


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def playbook(tmp_path: Path, collect: str, transfer: str = "url") -> Playbook:
    path = tmp_path / "playbook.yml"
    path.write_text(f"""name: hello
artifact:
  version: 1.0.0
  collect:
{collect}
transfer: {transfer}
install:
  root: 'C:\\apps\\hello'
service:
  name: hello
""")
    return load_playbook(path).render_global({})


def test_a_complete_url_playbook_gives_the_nodes_everything(tmp_path: Path) -> None:
    ca = pki.new_ca("repo CA", "tests")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(ca.cert_pem)
    pb = playbook(tmp_path, f"""    url: https://repo.example/hello-1.0.0.exe?X-Amz-Signature=deadbeef42&X-Amz-Expires=600
    sha256: {SHA.upper()}
    size: 7340032
    ca: certs/ca.pem
    token: repo-token-123""")
    manifest, source = url_artifact(pb, version="1.0.0")
    assert (source.sha256, source.size, source.token) == (SHA, 7340032, "repo-token-123")
    assert source.ca_pem == ca.cert_pem.decode()
    assert (manifest.sha256, manifest.size, manifest.version, manifest.source) == (SHA, 7340032, "1.0.0", "url")
    # The signature (the whole query string) and the token are never shown from now on.
    assert "deadbeef42" not in (manifest.url or "") and "deadbeef42" not in source.shown
    assert manifest.url == "https://repo.example/hello-1.0.0.exe?********"
    assert redact("Bearer repo-token-123") == "Bearer ********"


@pytest.mark.parametrize(("collect", "key", "words"), [
    ("    path: dist/hello.exe", "transfer", "needs artifact.collect.url"),
    (f"    url: https://repo.example/a.exe\n    sha256: {SHA}", "artifact.collect.size", "needs artifact.collect.size"),
    (f"    url: ftp://repo.example/a.exe\n    sha256: {SHA}\n    size: 10", "artifact.collect.url", "http or https"),
    (f"    url: https://me:pw@repo.example/a.exe\n    sha256: {SHA}\n    size: 10", "artifact.collect.url",
     "artifact.collect.token"),
    (f"    url: https://repo.example/a.exe\n    sha256: {SHA}\n    size: 10\n    ca: missing.pem",
     "artifact.collect.ca", "cannot read the CA file"),
    (f"    url: http://repo.example/a.exe\n    sha256: {SHA}\n    size: 10\n    ca: ca.pem",
     "artifact.collect.ca", "the url is http"),
    (f"    url: https://repo.example/a.exe\n    sha256: {SHA}\n    size: 10\n    ca: notes.txt",
     "artifact.collect.ca", "no PEM certificate"),
    (f"    url: https://repo.example/a.exe\n    sha256: {SHA}\n    size: 10\n    ca: /etc/ssl/certs/ca-certificates.crt",
     "artifact.collect.ca", "outside the project directory"),
])
def test_what_a_node_needs_is_checked_first(tmp_path: Path, collect: str, key: str, words: str) -> None:
    (tmp_path / "ca.pem").write_bytes(pki.new_ca("repo CA", "tests").cert_pem)
    (tmp_path / "notes.txt").write_text("not a certificate")
    with pytest.raises(ConfigError) as caught:
        url_artifact(playbook(tmp_path, collect), version="1.0.0")
    err = caught.value
    assert err.key == key and words in str(err) and "playbook.yml" in str(err), str(err)
    assert err.exit_code == 2


def test_a_local_artifact_and_transfer_url_exclude_each_other(tmp_path: Path) -> None:
    pb = playbook(tmp_path, f"    url: https://repo.example/a.exe\n    sha256: {SHA}\n    size: 10")
    with pytest.raises(ConfigError, match="--artifact names a local file"):
        url_artifact(pb, version="1.0.0", given_artifact="dist/hello.exe")


def test_size_must_be_positive_and_ca_goes_with_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        playbook(tmp_path, f"    url: https://repo.example/a.exe\n    sha256: {SHA}\n    size: 0")
    assert caught.value.key == "artifact.collect.size"
    with pytest.raises(ConfigError, match="'ca' and 'token' go with 'url'"):
        playbook(tmp_path, "    path: a.exe\n    ca: ca.pem", transfer="push")
