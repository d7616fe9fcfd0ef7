"""Host ranges for ui/: `compact_hosts` lives in the base layer (fleetctl/config/hostranges.py) so the engine's
verdict messages can use it too; ui/ keeps importing it from here."""

from __future__ import annotations

from fleetctl.config.hostranges import compact_hosts

__all__ = ["compact_hosts"]
