"""A lab node's artifact cache writes: streamed base64 chunks (push) or an HTTP(S) download (pull), each
verified against sha256 and size in a temporary file and renamed into the cache only when it matches."""

from __future__ import annotations

import base64
import hashlib
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fleetctl.config.redaction import redact, register_secret
from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.sandbox import Sandbox


def store_chunks(sandbox: Sandbox, target: Path, chunks: Iterable[Any], sha256: str, size: int,
                 compression: str) -> int:
    """Write the decoded (and, for gzip, inflated) chunks to `target`; returns the bytes received."""
    compression = compression.lower()
    if compression not in ("gzip", "none"):
        raise NodeError("INVALID_ARGUMENT", "Compression must be gzip or none", {"Compression": compression})
    sandbox.ensure_space(size, f"artifact {sha256[:12]} ({size} bytes)")
    tmp = target.with_name(f".incoming-{uuid.uuid4().hex[:12]}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    digest, written, received = hashlib.sha256(), 0, 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if compression == "gzip" else None
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                try:
                    raw = base64.b64decode(str(chunk), validate=True)
                except ValueError:
                    raise NodeError("INVALID_ARGUMENT", "pipeline input is not base64") from None
                received += len(raw)
                data = inflater.decompress(raw) if inflater else raw
                digest.update(data)
                written += len(data)
                if written > size:
                    break  # more than announced: it cannot match, stop writing
                out.write(data)
            if inflater and written <= size:
                tail = inflater.flush()
                digest.update(tail)
                written += len(tail)
                out.write(tail)
        if written != size or digest.hexdigest() != sha256:
            raise NodeError("CHECKSUM_MISMATCH", f"received bytes do not match sha256 {sha256} and size {size}; "
                            "nothing kept", {"expected": sha256, "actual": digest.hexdigest(), "size": written})
        sandbox.move_into_place(tmp, target)
    except zlib.error as err:
        raise NodeError("CHECKSUM_MISMATCH", f"the gzip stream is corrupt ({err}); nothing kept") from None
    finally:
        tmp.unlink(missing_ok=True)
    return received


def store_download(sandbox: Sandbox, target: Path, url: str, sha256: str, size: int, token: str | None,
                   ca_pem: str | None) -> int:
    """Download `url` (bearer `token`, trusting `ca_pem` for https) into `target`; returns the bytes received.

    The URL is used as given, unlike health URLs: it names the controller's pull server or the artifact's own
    server (transfer: url), and in a lab both run on this machine, which 127.0.0.1 reaches. A presigned URL's query
    string never appears in an error (it is the URL's credential).
    """
    query = urllib.parse.urlsplit(url).query
    if query:
        register_secret(query)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise NodeError("INVALID_ARGUMENT", f"not an http(s) URL: {redact(url)!r}", {"Url": redact(url)})
    sandbox.ensure_space(size, f"artifact {sha256[:12]} ({size} bytes)")
    request = urllib.request.Request(url)
    if token:
        # Not carried over a redirect, as HttpWebRequest drops it: the token is for this server only.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
    tmp = target.with_name(f".incoming-{uuid.uuid4().hex[:12]}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    digest, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                received += len(block)
                if received > size:
                    break
                digest.update(block)
                out.write(block)
        if received != size or digest.hexdigest() != sha256:
            raise NodeError("CHECKSUM_MISMATCH", f"downloaded bytes do not match sha256 {sha256} and size {size}; "
                            "nothing kept", {"expected": sha256, "actual": digest.hexdigest()})
        sandbox.move_into_place(tmp, target)
    except urllib.error.HTTPError as err:
        raise NodeError("DOWNLOAD_FAILED", f"download failed: HTTP {err.code}", {"status": err.code}) from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as err:
        reason = redact(str(getattr(err, "reason", err)))
        raise NodeError("DOWNLOAD_FAILED", f"download failed: {reason}", {"reason": reason}) from None
    finally:
        tmp.unlink(missing_ok=True)
    return received
