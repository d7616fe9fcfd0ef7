"""Telling people how a run went: webhooks named in the playbook's `notify:` section (generic JSON, Slack, Teams).

`Notifier.for_playbook(settings)` subscribes to a run's event bus like the journal does; `close()` after the run
waits for deliveries still in flight, never longer than each webhook's timeout, and returns what was delivered
and what failed. A failed delivery never changes the run's outcome.
"""

from fleetctl.notify.delivery import Delivery
from fleetctl.notify.notifier import Notifier
from fleetctl.notify.payloads import RunSummary

__all__ = ["Delivery", "Notifier", "RunSummary"]
