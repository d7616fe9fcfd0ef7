"""The node protocol, below everything that speaks it: the operations (`operations`), the errors a node call ends
with (`errors`), and the PowerShell module with its loader (`FleetNode.psm1`, `loader`).

`transport/` (how bytes reach a node), `node/` (typed calls), and the lab (the simulated node) all import from
here, and this package imports only `fleetctl.errors` and `fleetctl.config.redaction`.
"""
