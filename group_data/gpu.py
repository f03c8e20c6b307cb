"""The GPU box over Tailscale SSH: the defaults in all.py are its settings.

Override here what differs on your box, for example:
# adapters = [{"name": "sql", "path": "~/adapters/sql"}]
# base_model_revision = "<commit sha>"
"""
