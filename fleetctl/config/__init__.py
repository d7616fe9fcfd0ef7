"""Configuration: inventory, host patterns, playbook models, templating and redaction. Pure: no host I/O."""
