"""A fake fleet for rollout unit tests: each node is a small state machine answering node-protocol calls through
`FakeTransport`, so the engine, host steps and runner run unchanged above `NodeClient`.

Health is node-side (`Test-FleetHealth`): a node is healthy unless the running release's service arguments say
`-mode unhealthy`, mirroring the example service; `-mode crash` makes the service stop right after it starts.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.node.client import NodeClient
from fleetctl.protocol.errors import AuthenticationFailed, HostTimeout, HostUnreachable, NodeOperationError
from fleetctl.rollout.preparation import DeployOptions
from fleetctl.transport.fake import FakeCall, FakeTransport, error_document

PLAYBOOK = """\
name: hello
vars:
  hello_mode: ok
artifact:
  collect:
    path: hello.exe
install:
  root: 'C:\\\\apps\\\\hello'
  keep_releases: 3
  exe: hello.exe
  files:
    - src: hello.json.j2
      dest: hello.json
service:
  name: hello
  arguments: ["-mode", "{{ hello_mode }}", "-host", "{{ inventory_hostname }}"]
firewall:
  - name: hello-http
    port: 8080
health:
  url: "http://{{ inventory_hostname }}/healthz"
  from: node
  expect_json:
    version: "{{ version }}"
  interval: 0.01s
  timeout: 1s
  retries: 3
  stability_window: 0s
rollout:
  batch: 2
"""


def write_project(tmp: Path, hosts: int, playbook: str = PLAYBOOK,
                  address_base: str | None = None) -> tuple[Path, Path, Path]:
    """A playbook, a template, an inventory of `hosts` nodes and an artifact file under `tmp`. With
    `address_base` (e.g. "127.0.50.1") each node gets an address from it: then the controller can bind a pull
    server facing them (without, the names do not resolve and `transfer: auto` pushes)."""
    (tmp / "hello.json.j2").write_text('{"version": "{{ version }}"}\n')
    (tmp / "playbook.yml").write_text(playbook)
    artifact = tmp / "hello.exe"
    shutil.copyfile("/bin/true", artifact)  # any real executable: collect checks for PE or ELF
    lines = ["all:", "  hosts:"]
    for i in range(1, hosts + 1):
        lines.append(f"    n{i:02d}:")
        if address_base:
            first = [int(part) for part in address_base.split(".")]
            lines.append(f"      fleet_host: {'.'.join(map(str, first[:3] + [first[3] + i - 1]))}")
    lines += ["  vars:", "    fleet_scheme: http", "    fleet_auth: ntlm", "    fleet_user: u", "    fleet_password: pw"]
    (tmp / "inventory.yml").write_text("\n".join(lines) + "\n")
    return tmp / "playbook.yml", tmp / "inventory.yml", artifact


@dataclass
class FakeFleetNode:
    """One simulated node's app state, answering protocol calls."""

    name: str
    artifacts: dict[str, int] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # release -> files
    current: str | None = None
    previous: str | None = None
    service: dict[str, Any] | None = None  # definition
    state: str = "Stopped"
    pid: int = 0
    restarts: int = 0
    lock: dict[str, Any] | None = None
    renewals: int = 0
    unreachable: bool = False
    cut_off_from_controller: bool = False  # Save-FleetArtifactFromUrl fails as if the URL could not be reached
    stop_hangs: bool = False  # the service ignores Stop: SERVICE_STOP_TIMEOUT, it stays StopPending and runs on
    lose_after: str | None = None  # after answering this operation the node becomes `lost_as` (cut off)
    crash_after: str | None = None  # after answering this operation (once) the service stops by itself
    lost_as: str = "unreachable"  # unreachable (refused at once), auth-failure (401) or blackhole (never answers)
    released: threading.Event = field(default_factory=threading.Event)  # ends a blackhole's silence (test cleanup)
    artifact_bytes: int = 0
    pulled_bytes: int = 0
    operations: list[str] = field(default_factory=list)
    _pids: int = 1000
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, call: FakeCall) -> Any:
        if self.unreachable:
            if self.lost_as == "blackhole":
                self.released.wait(60)
                return HostTimeout("read timed out", host=self.name)
            if self.lost_as == "auth-failure":
                return AuthenticationFailed("the host refused the credentials (HTTP 401)", host=self.name)
            return HostUnreachable("connection refused", host=self.name, transient=False)
        with self._guard:
            self.operations.append(call.operation)
            handler = getattr(self, "op_" + call.operation.split("-")[0].lower() + "_"
                              + call.operation.split("-")[1].lower())
            answer = handler(call.params, call.input_objects)
            if call.operation == self.lose_after:
                self.unreachable = True
            if call.operation == self.crash_after:
                self.crash_after = None
                self.state = "Stopped"
            return answer

    def running_args(self) -> list[str]:
        return list((self.service or {}).get("Arguments") or [])

    def version(self) -> str | None:
        info = next((r for r in self.releases if r["release"] == self.current), None)
        return info["version"] if info else None

    # -- operations -------------------------------------------------------------------------------------------

    def op_lock_fleetapp(self, p: dict[str, Any], _: Any) -> Any:
        from fleetctl.protocol.locking import lock_decision

        held = self.lock
        decision = lock_decision(str(held["deploy_id"]) if held else "", bool(held and held.get("expired")),
                                 bool(held and held.get("reason")), p["DeployId"], p.get("TakeOver") or "")
        if decision == "held":
            raise NodeOperationError("LOCK_HELD", "held", {"holder": held})
        self.lock = {"owner": p["Owner"], "deploy_id": p["DeployId"], "acquired_at": "2024-01-01T00:00:00Z",
                     "expires_at": "2024-01-01T01:00:00Z", "process": p.get("Process"), "reason": p.get("Reason")}
        return {"lock": self.lock, "taken_over": held if decision in ("replace-expired", "take-over") else None}

    def op_update_fleetapplock(self, p: dict[str, Any], _: Any) -> Any:
        if not self.lock or self.lock["deploy_id"] != p["DeployId"]:
            raise NodeOperationError("LOCK_NOT_OWNED", "not ours", {"holder": self.lock})
        self.renewals += 1
        return {"lock": self.lock}

    def op_unlock_fleetapp(self, p: dict[str, Any], _: Any) -> Any:
        if self.lock and self.lock["deploy_id"] == p["DeployId"]:
            self.lock = None
            return {"released": True}
        if self.lock:
            raise NodeOperationError("LOCK_NOT_OWNED", "not ours", {"holder": self.lock})
        return {"released": False}

    def op_test_fleetartifact(self, p: dict[str, Any], _: Any) -> Any:
        size = self.artifacts.get(p["Sha256"])
        return {"present": size is not None, "path": "C:\\cache" if size else None, "size": size}

    def op_receive_fleetartifact(self, p: dict[str, Any], chunks: list[str] | None) -> Any:
        raw = b"".join(base64.b64decode(c) for c in chunks or [])
        data = gzip.decompress(raw) if p.get("Compression", "gzip") == "gzip" else raw
        if hashlib.sha256(data).hexdigest() != p["Sha256"]:
            return error_document("CHECKSUM_MISMATCH", "bad")
        self.artifacts[p["Sha256"]] = len(data)
        self.artifact_bytes += len(raw)
        return {"path": "C:\\cache", "sha256": p["Sha256"], "size": len(data), "received": len(raw)}

    def op_save_fleetartifactfromurl(self, p: dict[str, Any], _: Any) -> Any:
        # A real HTTP download from the controller's pull server, token and all, like the node module's.
        if self.cut_off_from_controller:
            return error_document("DOWNLOAD_FAILED", "download failed: connection refused", {"url": p["Url"]})
        request = urllib.request.Request(p["Url"], headers={"Authorization": f"Bearer {p['Token']}"})
        # Like the node module: trust only the pinned CA when one is given (the pull server's per-deploy CA).
        context = ssl.create_default_context(cadata=p["CaCertificate"]) if p.get("CaCertificate") else None
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # the test's pull server
                data = answer.read()
        except (urllib.error.URLError, OSError) as err:
            return error_document("DOWNLOAD_FAILED", f"download failed: {err}", {"url": p["Url"]})
        if hashlib.sha256(data).hexdigest() != p["Sha256"]:
            return error_document("CHECKSUM_MISMATCH", "bad")
        self.artifacts[p["Sha256"]] = len(data)
        self.pulled_bytes += len(data)
        return {"path": "C:\\cache", "sha256": p["Sha256"], "size": len(data), "received": len(data)}

    def op_install_fleetrelease(self, p: dict[str, Any], _: Any) -> Any:
        if p["Sha256"] not in self.artifacts:
            return error_document("NOT_FOUND", "artifact not in cache")
        created = not any(r["release"] == p["Release"] for r in self.releases)
        if created:
            self.releases.append({"release": p["Release"], "version": p["Version"], "sha256": p["Sha256"],
                                  "gate_failed": None})
            self.files[p["Release"]] = dict(p.get("Files") or {})
        return {"release": p["Release"], "path": "C:\\apps", "created": created}

    def op_set_fleetservice(self, p: dict[str, Any], _: Any) -> Any:
        created = self.service is None
        self.service = dict(p)
        return {"created": created, "changed": []}

    def op_stop_fleetservice(self, p: dict[str, Any], _: Any) -> Any:
        if self.stop_hangs and self.state in ("Running", "StopPending"):
            self.state = "StopPending"
            return error_document("SERVICE_STOP_TIMEOUT", f"hello did not stop within {p['TimeoutSeconds']} s "
                                  "(the process was not killed)", {"state": "StopPending", "was": "Running"})
        was, self.state = self.state, "Stopped"
        return {"state": "Stopped", "waited_ms": 1, "was": was}

    def op_start_fleetservice(self, p: dict[str, Any], _: Any) -> Any:
        if self.service is None or self.current is None:
            return error_document("NOT_FOUND", "no service")
        was = self.state
        if was != "Running":
            self._pids += 1
            self.pid = self._pids
        self.state = "Running"
        if "crash" in self.running_args():
            self.state = "Stopped"  # dies right after reporting Running
        return {"state": "Running", "pid": self.pid, "waited_ms": 1, "was": was}

    def op_switch_fleetrelease(self, p: dict[str, Any], _: Any) -> Any:
        if not any(r["release"] == p["Release"] for r in self.releases):
            return error_document("NOT_FOUND", "no such release")
        changed = self.current != p["Release"]
        if changed:
            self.previous, self.current = self.current, p["Release"]
        return {"current": self.current, "previous": self.previous, "changed": changed}

    def op_set_fleetreleaseverdict(self, p: dict[str, Any], _: Any) -> Any:
        entry = next((r for r in self.releases if r["release"] == p["Release"]), None)
        if entry is None:
            return error_document("NOT_FOUND", "no such release")
        entry["gate_failed"] = (p.get("Reason") or "failed") if p["Verdict"] == "failed" else None
        return {"release": p["Release"], "gate_failed": entry["gate_failed"]}

    def op_get_fleetstate(self, p: dict[str, Any], _: Any) -> Any:
        service = {"exists": self.service is not None, "state": self.state if self.service else None,
                   "pid": self.pid if self.state == "Running" else None, "restarts": self.restarts,
                   "binary_path": (self.service or {}).get("BinaryPath")}
        return {"releases": list(self.releases), "current": self.current, "previous": self.previous,
                "service": service, "lock": self.lock, "history": []}

    def op_test_fleethealth(self, p: dict[str, Any], _: Any) -> Any:
        if self.state != "Running":
            return {"status": None, "body": "", "elapsed_ms": 1, "error": "connection refused"}
        if "unhealthy" in self.running_args():
            return {"status": 500, "body": '{"status": "unhealthy"}', "elapsed_ms": 1, "error": None}
        return {"status": 200, "body": json.dumps({"status": "ok", "version": self.version()}), "elapsed_ms": 1,
                "error": None}

    def op_remove_fleetrelease(self, p: dict[str, Any], _: Any) -> Any:
        keep = p.get("Keep") or 5
        protected = {self.current, self.previous}
        removable = [r for r in self.releases if r["release"] not in protected]
        removed = [r["release"] for r in removable[: max(0, len(self.releases) - keep)]]
        self.releases = [r for r in self.releases if r["release"] not in removed]
        return {"removed": removed, "kept": [r["release"] for r in self.releases]}

    def op_get_fleetlog(self, p: dict[str, Any], _: Any) -> Any:
        parts = (p.get("Path") or "").split("\\")
        if len(parts) == 3 and parts[0] == "releases" and parts[1] in self.files:
            text = self.files[parts[1]].get(parts[2])
            if text is not None:
                return {"path": p["Path"], "lines": text.splitlines()}
        return error_document("NOT_FOUND", "no such file")

    def op_set_fleetfirewallrule(self, p: dict[str, Any], _: Any) -> Any:
        return {"changed": False}


class FakeFleet:
    """Nodes by name plus the `connect` factory the runner takes."""

    def __init__(self, names: list[str]) -> None:
        self.nodes = {n: FakeFleetNode(n) for n in names}

    def connect(self, host: str) -> NodeClient:
        return NodeClient(FakeTransport(self.nodes[host], host=host))


def options(project: tuple[Path, Path, Path], **kw: object) -> DeployOptions:
    """Deploy options for a `write_project` project (version 1.0.0, its artifact, a fixed owner); `kw` overrides."""
    playbook, inventory, artifact = project
    base = {"playbook": playbook, "inventories": [inventory], "artifact": artifact, "version": "1.0.0",
            "dist_dir": playbook.parent / "dist", "owner": "tester@ctl"}
    base.update(kw)
    return DeployOptions(**base)  # type: ignore[arg-type]
