"""`transfer: url`: an artifact that already lives in an HTTP(S) artifact repository, an object store (a presigned
URL) or a CDN, described from the playbook alone. The controller never downloads it; each node fetches it and
checks it against the sha256 and size the playbook declares, trusting the playbook's CA.

A presigned URL's query string is its credential (X-Amz-Signature ...), and a token is one: both are registered
as secrets here, before anything can print them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from fleetctl.artifacts.manifest import Manifest, check_version, utc_now
from fleetctl.config.playbook import Playbook
from fleetctl.config.project import find_project
from fleetctl.config.redaction import redact, register_secret
from fleetctl.errors import ConfigError

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


@dataclass(frozen=True)
class ArtifactUrl:
    """Where every node downloads the artifact from, and how it checks what it got."""

    url: str
    sha256: str
    size: int
    ca_pem: str | None = None  # trust only this CA for the download (None: the node's own trust store)
    token: str | None = None  # bearer token for the artifact repository

    @property
    def shown(self) -> str:
        """The URL as it may be printed (query string and token masked)."""
        return redact(self.url)


def url_artifact(playbook: Playbook, *, version: str, given_artifact: object | None = None) -> tuple[Manifest,
                                                                                                      ArtifactUrl]:
    """The manifest and download description of a `transfer: url` playbook (rendered with the real version).

    Raises ConfigError naming the playbook and key when the playbook does not say everything a node needs.
    """
    file = playbook.path
    if given_artifact is not None:
        raise ConfigError("--artifact names a local file, but transfer: url has the nodes download "
                          "artifact.collect.url; drop --artifact or set transfer to push, pull or auto",
                          file=file, key="transfer")
    collect = playbook.artifact.collect
    if collect is None or not collect.url:
        raise ConfigError("transfer: url needs artifact.collect.url (with sha256 and size): the nodes download the "
                          "artifact from there and the controller never has it", file=file, key="transfer")
    missing = [k for k in ("sha256", "size") if getattr(collect, k) is None]
    if missing:
        raise ConfigError(f"transfer: url needs artifact.collect.{' and '.join(missing)}: each node checks the "
                          "download against both before it keeps it", file=file,
                          key=f"artifact.collect.{missing[0]}")
    parts = urlsplit(collect.url)
    if parts.query:
        register_secret(parts.query)  # a presigned URL's signature
    register_secret(collect.token)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"expected an absolute http or https URL, got {redact(collect.url)!r}", file=file,
                          key="artifact.collect.url")
    if parts.username or parts.password:
        raise ConfigError("credentials in the URL would be shown and logged; give artifact.collect.token instead",
                          file=file, key="artifact.collect.url")
    ca_pem = read_ca_pem(playbook, collect.ca) if collect.ca else None
    if ca_pem is not None and parts.scheme != "https":
        raise ConfigError("artifact.collect.ca is the CA of an https server; the url is http", file=file,
                          key="artifact.collect.ca")
    check_version(version)
    assert collect.sha256 is not None and collect.size is not None
    name = playbook.artifact.name or playbook.name
    source = ArtifactUrl(collect.url, collect.sha256.lower(), collect.size, ca_pem, collect.token)
    # No local copy: `path` is the playbook's directory, never read; `url` says where the bytes are.
    manifest = Manifest(name=name, version=version, sha256=source.sha256, size=source.size, goos="unknown",
                        goarch="unknown", path=playbook.base_dir, build_time=utc_now(), source="url",
                        url=source.shown)
    return manifest, source


def read_ca_pem(playbook: Playbook, ca: str) -> str:
    """The one PEM certificate in `ca` (relative to the playbook); a ConfigError naming the key otherwise."""
    # Confined like every file a playbook names (install.files, collect.path): under the project directory.
    path = find_project(playbook.base_dir).readable(ca, base=playbook.base_dir, what="artifact.collect.ca",
                                                    file=playbook.path, key="artifact.collect.ca")
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ConfigError(f"cannot read the CA file {path}: {reason}", file=playbook.path,
                          key="artifact.collect.ca") from None
    found = _PEM_CERT.findall(text)
    if not found:
        raise ConfigError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", file=playbook.path,
                          key="artifact.collect.ca")
    if len(found) > 1:
        raise ConfigError(f"{path} holds {len(found)} certificates; give the one CA that signed the artifact "
                          "server's certificate", file=playbook.path, key="artifact.collect.ca")
    return found[0] + "\n"
