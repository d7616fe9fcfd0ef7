"""Release ids and what a deploy would change (pure)."""

from __future__ import annotations

from fleetctl.node.results import NodeState, ReleaseInfo, ServiceInfo
from fleetctl.rollout.release import ServiceDefinition, is_current, release_id

SVC = ServiceDefinition(name="hello", binary_path="C:\\apps\\hello\\current\\hello.exe", arguments=("-mode", "ok"))
SHA = "ab" * 32


def test_release_id_covers_artifact_files_and_service_but_not_the_password() -> None:
    base = release_id("1.0.0", SHA, {"a.json": "1"}, SVC)
    assert base.startswith("1.0.0-") and len(base) == len("1.0.0-") + 8
    assert release_id("1.0.0", SHA, {"a.json": "1"}, SVC) == base
    assert release_id("1.0.0", "cd" * 32, {"a.json": "1"}, SVC) != base
    assert release_id("1.0.0", SHA, {"a.json": "2"}, SVC) != base
    other_args = ServiceDefinition(name="hello", binary_path=SVC.binary_path, arguments=("-mode", "unhealthy"))
    assert release_id("1.0.0", SHA, {"a.json": "1"}, other_args) != base
    with_password = ServiceDefinition(name="hello", binary_path=SVC.binary_path, arguments=("-mode", "ok"),
                                      password="s3cret-pass")
    assert release_id("1.0.0", SHA, {"a.json": "1"}, with_password) == base
    assert "s3cret" not in str(with_password.public_json())


def _state(current: str | None, state: str = "Running") -> NodeState:
    releases = (ReleaseInfo(current, "1.0.0", SHA, None),) if current else ()
    return NodeState(releases, current, None, ServiceInfo(True, state, 5, None, 0, None), None)


def test_is_current_needs_the_release_and_a_running_service() -> None:
    assert is_current("2.0.0-aaaaaaaa", _state("2.0.0-aaaaaaaa"))
    assert not is_current("2.0.0-aaaaaaaa", _state("2.0.0-aaaaaaaa", state="Stopped"))
    assert not is_current("2.0.0-aaaaaaaa", _state("1.0.0-bbbbbbbb"))