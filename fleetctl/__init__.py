"""fleetctl: a deploy orchestrator for fleets of Windows servers over WinRM/PowerShell Remoting."""

__version__ = "0.1.0"
