"""Webhook notifications against a real local HTTP receiver: delivered, receiver down, slow beyond the timeout,
answering 500; which event a run's end is; payload formats; nothing secret on the wire or in a report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fleetctl.config.playbook import Webhook
from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.errors import ConfigError
from fleetctl.notify import Notifier
from fleetctl.notify.payloads import RunSummary, render
from fleetctl.pki import issue_server_cert, new_ca, server_ssl_context_for
from fleetctl.rollout.events import EventBus, Halting, HostFinished, HostOutcome, RunFinished, RunStarted

from .receiver import closed_port_url, receiver

START = RunStarted(run_id="20261202T020000Z-abc123", kind="deploy", playbook="playbooks/hello.yml",
                   service="hello", version="1.4.0", release="1.4.0-deadbeef", strategy="rolling", user="ops@ctl",
                   batches=(("web1",), ("web2", "web3")), canary=True)


def hook(url: str, **kw: Any) -> Webhook:
    return Webhook.model_validate({"url": url, **kw})


def run_events(bus: EventBus, exit_code: int = 0, *, halted: bool = False, reason: str = "") -> None:
    bus.emit(START)
    outcomes = {"web1": HostOutcome("web1", "deployed", "1.4.0-deadbeef"),
                "web2": HostOutcome("web2", "deployed", "1.4.0-deadbeef"),
                "web3": HostOutcome("web3", "deployed", "1.4.0-deadbeef")}
    if exit_code:
        outcomes["web2"] = HostOutcome("web2", "rolled_back", "1.3.0-c0ffee", reason or "health: status 500")
        outcomes["web3"] = HostOutcome("web3", "not_started")
    if halted:
        bus.emit(Halting("canary failed on web2"))
    for o in outcomes.values():
        bus.emit(HostFinished(o))
    bus.emit(RunFinished(START.run_id, exit_code, outcomes, "a message"))


def notify(*hooks: Webhook, exit_code: int = 0, halted: bool = False, reason: str = "") -> tuple[list[Any], float]:
    """Run a synthetic deploy with the notifier subscribed; the deliveries and how long close() took."""
    notifier = Notifier(hooks)
    bus = EventBus()
    notifier.subscribe(bus)
    emitted = time.monotonic()
    run_events(bus, exit_code, halted=halted, reason=reason)
    assert time.monotonic() - emitted < 0.5, "the bus subscriber must never wait for a delivery"
    started = time.monotonic()
    deliveries = notifier.close()
    return deliveries, time.monotonic() - started


@pytest.fixture(autouse=True)
def _clean_secrets() -> Any:
    yield
    forget_secrets()


def test_start_and_success_are_delivered_in_order_as_generic_json() -> None:
    with receiver() as rec:
        deliveries, _ = notify(hook(rec.url))
        assert [d.ok for d in deliveries] == [True, True]
        start, end = rec.bodies()
    assert start["event"] == "start" and start["status"] == "started" and start["hosts"] == 3
    assert start["finished_at"] is None and start["counts"] == {}
    assert end["event"] == "success" and end["status"] == "succeeded"
    for key, value in {"run_id": START.run_id, "history_id": START.run_id, "service": "hello", "version": "1.4.0",
                       "strategy": "rolling", "canary": True, "exit_code": 0, "counts": {"deployed": 3},
                       "failed_hosts": [], "schema": "fleetctl.notification/1",
                       "history": f"fleetctl history show {START.run_id}"}.items():
        assert end[key] == value, key
    assert isinstance(end["duration_seconds"], float) and end["duration_seconds"] >= 0
    assert rec.requests[0].headers["Content-Type"] == "application/json"


def test_failure_lists_failed_hosts_with_reasons_and_halted_is_its_own_event() -> None:
    with receiver() as rec:
        notify(hook(rec.url, events=["failure", "halted"]), exit_code=1)
        notify(hook(rec.url, events=["failure", "halted"]), exit_code=3, halted=True)
        notify(hook(rec.url, events=["failure", "halted"]), exit_code=0)  # success: not asked for
        failure, halted = rec.bodies()
    assert failure["event"] == "failure" and failure["counts"] == {"deployed": 1, "rolled_back": 1,
                                                                   "not_started": 1}
    assert failure["failed_hosts"] == [{"host": "web2", "outcome": "rolled_back", "reason": "health: status 500"}]
    assert halted["event"] == "halted" and halted["exit_code"] == 3


@pytest.mark.parametrize(("code", "halted", "event"), [
    (0, False, "success"), (1, False, "failure"), (1, True, "halted"), (3, True, "halted"), (4, False, "failure"),
    (130, False, "interrupted"), (130, True, "interrupted"),
])
def test_which_event_a_run_end_is(code: int, halted: bool, event: str) -> None:
    assert Notifier.event_for(code, halted) == event


def test_receiver_down_is_reported_after_the_attempts_and_within_the_timeout() -> None:
    deliveries, took = notify(hook(closed_port_url(), timeout="3s", attempts=3))
    assert [d.ok for d in deliveries] == [False, False]
    assert all(d.attempts == 3 for d in deliveries)
    assert "cannot connect" in (deliveries[1].error or "")
    assert took < 3.5
    assert "notify.webhooks[0] (json): 'success' notification not delivered after 3 attempt(s)" in \
        deliveries[1].describe()


def test_slow_receiver_is_abandoned_at_the_timeout() -> None:
    with receiver(delay=10) as rec:
        deliveries, took = notify(hook(rec.url, timeout="1s", attempts=2))
        assert took < 2.0, f"close() waited {took:.1f}s for a 1s timeout"
        assert [d.ok for d in deliveries] == [False, False]
        assert any("no answer within" in (d.error or "") or "abandoned" in (d.error or "") for d in deliveries)


def test_http_500_is_retried_then_reported_and_4xx_is_not_retried() -> None:
    with receiver(status=500) as rec:
        deliveries, _ = notify(hook(rec.url, events=["success"], attempts=3, timeout="5s"))
        [d] = deliveries
        assert not d.ok and d.attempts == 3 and d.status == 500 and "HTTP 500" in (d.error or "")
        assert len(rec.requests) == 3
    with receiver(status=404) as rec:
        [d] = notify(hook(rec.url, events=["success"], attempts=3))[0]
        assert not d.ok and d.attempts == 1 and d.status == 404


def test_tls_is_validated_by_default_and_a_ca_bundle_makes_it_trusted(tmp_path: Path) -> None:
    ca = new_ca("notify test CA", "fleetctl tests")
    server = issue_server_cert(ca, ["127.0.0.1"])
    with receiver(tls=server_ssl_context_for(server)) as rec:
        [d] = notify(hook(rec.url, events=["success"]))[0]
        assert not d.ok and "certificate not trusted" in (d.error or "") and d.attempts == 1
        bundle = tmp_path / "ca.pem"
        bundle.write_bytes(ca.cert_pem)
        [d] = notify(hook(rec.url, events=["success"], ca_bundle=str(bundle)))[0]
        assert d.ok, d.error


def test_a_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle|CA bundle"):
        Notifier([hook("https://example.invalid/x", ca_bundle="nope.pem")], base_dir=tmp_path)


def test_secrets_and_the_url_never_reach_the_wire_or_the_report() -> None:
    register_secret("s3cr3t-db-password")
    with receiver(status=500) as rec:
        deliveries, _ = notify(hook(rec.url, headers={"Authorization": "Bearer tok-abcdef-123"}, attempts=1),
                               exit_code=1, reason="install: could not log in with s3cr3t-db-password")
        raw = b"".join(r.raw for r in rec.requests)
        assert rec.requests[0].headers["Authorization"] == "Bearer tok-abcdef-123"  # sent, but never shown
    assert b"s3cr3t-db-password" not in raw and b"********" in raw
    shown = json.dumps([d.to_json() for d in deliveries]) + " ".join(d.describe() for d in deliveries)
    assert rec.url not in shown and "T0K3N" not in shown and "tok-abcdef-123" not in shown


def test_bad_webhook_settings_are_refused_without_showing_the_url() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        hook("ftp://hooks.example/T0K3N")
    assert "T0K3N" not in str(err.value.errors()[0]["msg"])
    with pytest.raises(ValidationError):
        hook("https://hooks.example/x", events=[])
    with pytest.raises(ValidationError):
        hook("https://hooks.example/x", events=["deployed"])
    with pytest.raises(ValidationError):
        hook("https://hooks.example/x", format="discord")


def summary(event: str = "failure") -> RunSummary:
    from fleetctl.notify.payloads import FailedHost

    return RunSummary(event=event, run_id="r1", kind="deploy", playbook="pb.yml",  # type: ignore[arg-type]
                      service="hello", version="1.4.0", release=None, strategy="rolling", canary=False, user="ops",
                      controller="ctl", hosts=12, batches=3, started_at=1000.0, finished_at=1075.0, exit_code=1,
                      message="1 host(s) failed", counts={"deployed": 11, "rolled_back": 1},
                      failed_hosts=(FailedHost("web<2>", "rolled_back", "health: status 500 & <timeout>"),))


def test_slack_format() -> None:
    body = render(summary(), "slack")
    assert body["text"].startswith("fleetctl: deploy of hello 1.4.0 failed in 75.0s: 11 deployed, 1 rolled back")
    [attachment] = body["attachments"]
    blocks = json.dumps(attachment["blocks"])
    assert "web&lt;2&gt;: rolled_back: health: status 500 &amp; &lt;timeout&gt;" in blocks
    assert attachment["color"] == "#E01E5A"
    assert all(b["type"] in ("section", "context") for b in attachment["blocks"])


def test_teams_format_is_one_adaptive_card() -> None:
    body = render(summary(), "teams")
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    facts = {f["title"]: f["value"] for f in next(b for b in card["body"] if b["type"] == "FactSet")["facts"]}
    assert facts["Service"] == "hello" and facts["Outcome"] == "11 deployed, 1 rolled back" and facts["Took"] == "75.0s"
    assert any(b.get("text") == "web<2>: rolled_back: health: status 500 & <timeout>" for b in card["body"])


def test_a_run_that_raises_still_announces_its_end() -> None:
    with receiver() as rec:
        notifier = Notifier([hook(rec.url)])
        bus = EventBus()
        notifier.subscribe(bus)
        bus.emit(START)
        notifier.run_ended_abnormally(RuntimeError("engine bug"))
        notifier.run_ended_abnormally(RuntimeError("twice"))  # announced once
        deliveries = notifier.close()
        assert [(d.event, d.ok) for d in deliveries] == [("start", True), ("failure", True)]
        end = rec.bodies()[1]
    assert end["event"] == "failure" and end["exit_code"] is None
    assert "RuntimeError: engine bug" in end["message"]
    # Nothing started, nothing to announce.
    idle = Notifier([hook("http://127.0.0.1:9/x")])
    idle.run_ended_abnormally(KeyboardInterrupt())
    assert idle.close() == []
