"""Scheduled unattended deploys on the controller: entries, the system schedulers that fire them, one run."""
