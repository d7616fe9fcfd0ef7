"""Getting an artifact into a node's cache, four ways behind one call: skip, push (gzip chunks streamed through
one pipeline's input), pull (the node downloads it from the controller's pull server) or url (the node downloads
it from where it already lives, an artifact repository or object store; the controller moves no bytes).

`auto` rule: pull when the caller gives a pull server (it is bound to an address the nodes were said to reach);
a node that cannot download it (DOWNLOAD_FAILED) falls back to push, so auto never fails where push would work.
The artifact is read, hashed and compressed once per process and the chunks are shared by every host.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from fleetctl.artifacts.url_artifact import ArtifactUrl
from fleetctl.config.redaction import redact
from fleetctl.errors import ConfigError
from fleetctl.node.client import NodeClient
from fleetctl.node.results import StoredArtifact
from fleetctl.protocol.errors import NodeOperationError

TransferMode = Literal["push", "pull", "auto", "url"]
TRANSFER_MODES: tuple[str, ...] = ("push", "pull", "auto", "url")
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total) of what this host's transfer moves


class ArtifactSource(Protocol):
    """What a pull transfer needs from the controller's pull server (`fleetctl.artifacts.pull_server.PullServer`):
    serve a file under its sha256, the URL a node fetches it from, the bearer token and the CA the node pins."""

    token: str
    ca_pem: str | None

    def add(self, path: str | Path, sha256: str) -> None: ...

    def url_for(self, sha256: str) -> str: ...

# Go executables compress to ~45-55%; level 6 costs ~1 s per 20 MB once per deploy, level 9 gains ~1% more.
GZIP_LEVEL = 6
# Sending gzip that saves less than this is not worth the node's decompression.
_MIN_SAVING = 0.05


@dataclass(frozen=True)
class TransferResult:
    method: Literal["skipped", "push", "pull", "url"]
    bytes_sent: int
    seconds: float
    path: str | None = None  # the artifact's path in the node's cache
    fallback: str | None = None  # `auto` pushed because the pull failed: why (redacted, one line)


@dataclass
class PreparedArtifact:
    """An artifact read and verified once; its compressed form (made on first push, not for skip or pull) and
    chunk lists are shared by all hosts."""

    path: Path
    sha256: str
    size: int
    _data: bytes = field(repr=False)
    _payload: bytes | None = field(default=None, repr=False)
    _compression: Literal["gzip", "none"] = "gzip"
    _chunks: dict[int, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _pack(self) -> None:
        # Caller holds the lock. Threads pushing to other hosts wait here for the one compression.
        if self._payload is None:
            packed = gzip.compress(self._data, compresslevel=GZIP_LEVEL, mtime=0)
            if len(packed) <= len(self._data) * (1 - _MIN_SAVING):
                self._payload, self._compression = packed, "gzip"
            else:
                self._payload, self._compression = self._data, "none"

    @property
    def payload(self) -> bytes:
        """What is pushed: gzip of the file, or the file itself when gzip does not help."""
        with self._lock:
            self._pack()
            assert self._payload is not None
            return self._payload

    @property
    def compression(self) -> Literal["gzip", "none"]:
        with self._lock:
            self._pack()
            return self._compression

    def chunks(self, chunk_bytes: int) -> tuple[str, ...]:
        """The payload as base64 strings of at most `chunk_bytes` raw bytes each, computed once per size."""
        with self._lock:
            self._pack()
            assert self._payload is not None
            cached = self._chunks.get(chunk_bytes)
            if cached is None:
                view = memoryview(self._payload)
                cached = tuple(base64.b64encode(view[i:i + chunk_bytes]).decode("ascii")
                               for i in range(0, max(len(view), 1), chunk_bytes))
                self._chunks[chunk_bytes] = cached
            return cached


_prepared: dict[tuple[str, str], PreparedArtifact] = {}
_prepared_lock = threading.Lock()
_key_locks: dict[tuple[str, str], threading.Lock] = {}


def prepare_artifact(artifact_path: str | Path, sha256: str) -> PreparedArtifact:
    """Read and verify the artifact against `sha256`, once per process (threads wait for the first)."""
    path = Path(artifact_path).resolve()
    key = (str(path), sha256.lower())
    with _prepared_lock:
        if key in _prepared:
            return _prepared[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _prepared_lock:
            if key in _prepared:
                return _prepared[key]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read the artifact: {err.strerror or err}", file=path) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise ConfigError(f"the artifact's sha256 is {actual}, its manifest says {sha256}; rebuild or "
                              "collect it again", file=path)
        prepared = PreparedArtifact(path, actual, len(data), data)
        with _prepared_lock:
            _prepared[key] = prepared
        return prepared


def forget_prepared() -> None:
    """Drop the process-wide artifact cache (tests, long-lived processes)."""
    with _prepared_lock:
        _prepared.clear()
        _key_locks.clear()


class _ProgressChunks:
    """Re-iterable chunk stream that reports progress as the transport pulls each chunk (i.e. sent the one
    before); a retry iterates it again from the start."""

    def __init__(self, chunks: tuple[str, ...], chunk_bytes: int, total: int, progress: ProgressCallback | None):
        self.chunks, self.chunk_bytes, self.total, self.progress = chunks, chunk_bytes, total, progress

    def __iter__(self) -> Iterator[str]:
        for index, chunk in enumerate(self.chunks):
            if self.progress:
                self.progress(min(index * self.chunk_bytes, self.total), self.total)
            yield chunk


def ensure_artifact(
    client: NodeClient,
    artifact_path: str | Path | ArtifactUrl,
    sha256: str,
    mode: TransferMode = "auto",
    pull_server: ArtifactSource | None = None,
    progress: ProgressCallback | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> TransferResult:
    """Make sure the node's artifact cache holds `artifact_path` (whose sha256 is `sha256`).

    Raises NodeOperationError (CHECKSUM_MISMATCH, DISK_FULL, DOWNLOAD_FAILED...) or a TransportError; on a
    checksum mismatch the node keeps nothing. With `auto`, a node that cannot download from the pull server
    (DOWNLOAD_FAILED) gets a push instead: `on_fallback(reason)` is told before it starts.

    An `ArtifactUrl` (mode `url`) is downloaded by the node itself; there is no fallback, since the controller
    has no copy. A local file under mode `url` (the nssm.exe wrapper, which fleetctl itself ships) is pushed.
    """
    if mode not in TRANSFER_MODES:
        raise ConfigError(f"expected transfer to be one of {', '.join(TRANSFER_MODES)}, got {mode!r}",
                          key="transfer")
    if isinstance(artifact_path, ArtifactUrl):
        if mode != "url":
            raise ConfigError(f"an artifact URL is downloaded by the nodes only with transfer: url, not {mode}",
                              key="transfer")
        return _from_url(client, artifact_path, sha256, progress)
    if mode == "url":
        mode = "push"
    if mode == "pull" and pull_server is None:
        raise ConfigError("transfer: pull needs the controller's pull server (an address the nodes can reach)",
                          key="transfer")
    started = time.monotonic()
    artifact = prepare_artifact(artifact_path, sha256)
    status = client.test_fleet_artifact(sha256=artifact.sha256)
    if status.present:
        if progress:
            progress(artifact.size, artifact.size)
        return TransferResult("skipped", 0, time.monotonic() - started, status.path)

    fallback: str | None = None
    if pull_server is not None and mode in ("pull", "auto"):
        try:
            stored = _pull(client, artifact, pull_server, progress)
            return TransferResult("pull", stored.received or artifact.size, time.monotonic() - started, stored.path)
        except NodeOperationError as err:
            if mode == "pull" or err.code != "DOWNLOAD_FAILED":
                raise
            fallback = redact(f"{err.code}: {err.message}")
            if on_fallback is not None:
                on_fallback(fallback)
    stored = _push(client, artifact, progress)
    return TransferResult("push", len(artifact.payload), time.monotonic() - started, stored.path, fallback)


def _from_url(client: NodeClient, source: ArtifactUrl, sha256: str, progress: ProgressCallback | None) -> TransferResult:
    started = time.monotonic()
    if source.sha256 != sha256.lower():
        raise ConfigError(f"the release expects sha256 {sha256}, the artifact URL is declared as {source.sha256}",
                          key="artifact.collect.sha256")
    status = client.test_fleet_artifact(sha256=source.sha256)
    if status.present:
        if progress:
            progress(source.size, source.size)
        return TransferResult("skipped", 0, time.monotonic() - started, status.path)
    if progress:
        progress(0, source.size)
    stored = client.save_fleet_artifact_from_url(url=source.url, sha256=source.sha256, size=source.size,
                                                 token=source.token, ca_certificate=source.ca_pem)
    if stored.sha256.lower() != source.sha256:
        raise NodeOperationError("CHECKSUM_MISMATCH", f"the node stored {stored.sha256 or 'nothing'}, expected "
                                 f"{source.sha256}", {"actual": stored.sha256}, operation="Save-FleetArtifactFromUrl",
                                 host=client.host)
    if progress:
        progress(source.size, source.size)
    # The node, not the controller, moved these bytes: the controller sent none.
    return TransferResult("url", 0, time.monotonic() - started, stored.path)


def _push(client: NodeClient, artifact: PreparedArtifact, progress: ProgressCallback | None) -> StoredArtifact:
    chunk_bytes = client.max_chunk_bytes
    total = len(artifact.payload)
    chunks = _ProgressChunks(artifact.chunks(chunk_bytes), chunk_bytes, total, progress)
    stored = client.receive_fleet_artifact(sha256=artifact.sha256, size=artifact.size,
                                           compression=artifact.compression, chunks=chunks)
    _check_stored(stored, artifact, "Receive-FleetArtifact", client.host)
    if progress:
        progress(total, total)
    return stored


def _pull(client: NodeClient, artifact: PreparedArtifact, server: ArtifactSource,
          progress: ProgressCallback | None) -> StoredArtifact:
    if progress:
        progress(0, artifact.size)
    server.add(artifact.path, artifact.sha256)
    stored = client.save_fleet_artifact_from_url(url=server.url_for(artifact.sha256), sha256=artifact.sha256,
                                                 size=artifact.size, token=server.token,
                                                 ca_certificate=server.ca_pem)
    _check_stored(stored, artifact, "Save-FleetArtifactFromUrl", client.host)
    if progress:
        progress(artifact.size, artifact.size)
    return stored


def _check_stored(stored: StoredArtifact, artifact: PreparedArtifact, operation: str, host: str) -> None:
    # The node verifies before keeping anything; this guards against a node that reports success wrongly.
    if stored.sha256.lower() != artifact.sha256:
        raise NodeOperationError("CHECKSUM_MISMATCH", f"the node stored {stored.sha256 or 'nothing'}, expected "
                                 f"{artifact.sha256}", {"actual": stored.sha256}, operation=operation, host=host)
