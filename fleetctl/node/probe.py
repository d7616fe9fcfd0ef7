"""Probing a service's health URL, the two ways a playbook may ask for: from the controller (`transport/http.py`,
the controller's one HTTP module) or from the node itself (`Test-FleetHealth`). Both give a `ProbeResult`; judging
it is `fleetctl.rollout.health`'s job."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fleetctl.node.client import NodeClient
from fleetctl.transport import http

BODY_LIMIT = 4096  # what Test-FleetHealth returns too


@dataclass(frozen=True)
class ProbeResult:
    """One HTTP answer (or the reason there was none)."""

    status: int | None
    body: str
    elapsed_ms: int
    error: str | None = None


def probe_from_controller(url: str, timeout: float) -> ProbeResult:
    """GET `url` from this machine with a per-try timeout; an HTTP error status is an answer, not an error."""
    answer = http.get(url, timeout, limit=BODY_LIMIT)
    return ProbeResult(answer.status, answer.body.decode("utf-8", "replace"), answer.elapsed_ms, answer.error)


def probe_from_node(client: NodeClient, url: str, timeout: float) -> ProbeResult:
    """Ask the node to GET `url` itself (`Test-FleetHealth`)."""
    started = time.monotonic()
    answer = client.test_fleet_health(url=url, timeout_seconds=max(1, math.ceil(timeout)))
    elapsed = answer.elapsed_ms if answer.elapsed_ms is not None else int((time.monotonic() - started) * 1000)
    return ProbeResult(answer.status, answer.body, int(elapsed), answer.error)
