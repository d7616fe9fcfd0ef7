"""A build's manifest as a table (`fleetctl build`)."""

from __future__ import annotations

from rich.table import Table

from fleetctl.artifacts.manifest import Manifest
from fleetctl.ui.console import safe


def manifest_table(manifest: Manifest) -> Table:
    table = Table(title=f"{manifest.name} {manifest.version}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("artifact", str(manifest.path)), ("sha256", manifest.sha256), ("size", f"{manifest.size:,} bytes"),
        ("platform", f"{manifest.goos}/{manifest.goarch}"), ("go", manifest.go_version or "-"),
        ("commit", manifest.git_commit or "-"), ("built", manifest.build_time), ("source", manifest.source),
    ]
    for key, value in rows:
        table.add_row(key, safe(value))
    return table
