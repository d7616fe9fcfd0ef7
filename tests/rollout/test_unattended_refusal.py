"""What an unattended run is told when a node's lock stops it: never to pass --force (nobody is there to judge)."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetctl.node.results import LockInfo
from fleetctl.rollout.lock_keeper import refusal

SINCE = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
RUN = LockInfo(owner="alice@laptop", deploy_id="manual-run", acquired_at=SINCE, expires_at=SINCE)
FREEZE = LockInfo(owner="bob@desk", deploy_id="freeze", acquired_at=SINCE, expires_at=SINCE, reason="quarter end")


def test_a_gone_holder_is_suggested_to_a_person_but_never_to_an_unattended_run() -> None:
    person = refusal("web1", RUN, gone="its run finished", force=False, playbook="pb.yml")
    assert "pass --force" in person
    unattended = refusal("web1", RUN, gone="its run finished", force=False, playbook="pb.yml", unattended=True)
    assert "--force" not in unattended
    assert "alice@laptop" in unattended and "its run finished" in unattended
    assert "never takes over a lock" in unattended and "changed nothing" in unattended


def test_a_live_holder_and_a_freeze_as_an_unattended_run_hears_them() -> None:
    live = refusal("web1", RUN, gone=None, force=False, playbook="pb.yml", unattended=True)
    assert "--force" not in live and "live" in live and "never takes over a lock" in live
    frozen = refusal("web1", FREEZE, gone=None, force=False, playbook="pb.yml", unattended=True)
    assert "--force" not in frozen and "quarter end" in frozen and "fleetctl unlock pb.yml" in frozen
