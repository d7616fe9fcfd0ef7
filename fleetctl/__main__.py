"""Allows `python -m fleetctl`."""
from fleetctl.cli.app import main

main()
