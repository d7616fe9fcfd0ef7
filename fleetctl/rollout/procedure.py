"""What a strategy tells the engine: the `HostProcedure` protocol, one object per run.

A procedure says what happens on one host in four named parts, and the engine (`rollout/engine.py`) decides
when: which hosts, in which batch, how many at once, what the failure budget and canaries allow. The engine knows
nothing of what a part does, so a new strategy is a new procedure and no change to the engine.

- `stage(ctx)`: everything before the running service is touched (state, transfer, install). It may run while
  the previous batch is in its health gates (never during a canary batch). Returns the value `activate` gets, or
  the host's final `HostOutcome` (already current: skipped; a failure: the host is left as it was).
- `activate(ctx, staged)`: make the host run the new thing, gated on health; roll the host back itself when that
  fails. Returns the host's outcome.
- `follow_up(ctx, outcome)`: work after a successful activation that must not hold up the batch (retention).
  The batch is judged on `activate`'s outcome; the host is announced once this returns.
- `undo(ctx, outcome)`: return a host that passed to where it was, when another canary of its batch failed.

None of them raises for a host's failure: an error ends in the returned outcome. Implementations:
`rollout/deploy.py` (DeployProcedure), `rollout/rollback.py` (RollbackProcedure), `rollout/bluegreen_run.py`
(BlueGreenProcedure), `rollout/remove.py`
(RemoveProcedure).
"""


from __future__ import annotations

from typing import Protocol

from fleetctl.rollout.events import HostOutcome, RunInfo
from fleetctl.rollout.host_steps import HostContext


class HostProcedure(Protocol):
    """One strategy's per-host work (see the module docstring)."""

    @property
    def info(self) -> RunInfo: ...

    @property
    def notes(self) -> tuple[str, ...]:
        """One-line remarks about the run, announced right after it starts (Notice events)."""
        ...

    def stage(self, ctx: HostContext) -> object | HostOutcome: ...

    def activate(self, ctx: HostContext, staged: object | HostOutcome) -> HostOutcome: ...

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome: ...

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome: ...
