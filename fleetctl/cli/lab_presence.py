"""Whether an inventory belongs to a lab that is down, and which lab inventory to use when none is named.

A command that is about to contact hosts asks `refuse_stopped_lab(paths)` first: an inventory written by
`fleetctl lab up` (its `# fleetctl lab: DIR` line) whose lab is not running gets one line saying so and how to
start it, instead of a connection-refused error per host. Only the CLI may look at the lab (tests/test_layering).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fleetctl.errors import ConfigError
from fleetctl.lab.layout import LabLayout, lab_dir_of_inventory
from fleetctl.ui.console import stderr


def refuse_stopped_lab(paths: Sequence[Path]) -> None:
    """A ConfigError (exit 2, nothing contacted) when one of `paths` is a lab's inventory and that lab is down."""
    for path in paths:
        directory = lab_dir_of_inventory(Path(path))
        if directory is None:
            continue
        from fleetctl.lab.control import (
            running_pid,  # only for a lab's inventory: the lab's modules are not light
        )

        if running_pid(LabLayout(directory)) is None:
            raise ConfigError(f"the lab in {directory} is not running (fleetctl lab up --dir {directory})",
                              file=path)


def lab_inventory() -> Path | None:
    """The inventory of this project's lab (the remembered `lab up --dir`, else `.fleetctl/lab`), if one was
    written; said on stderr, since nobody named it."""
    layout = LabLayout.at(None)
    if not layout.inventory.is_file():
        return None
    stderr().print(f"inventory: {layout.inventory} (the lab's; no -i, FLEETCTL_INVENTORY, fleet.yml inventory or "
                   "./inventory)", markup=False, highlight=False)
    return layout.inventory
