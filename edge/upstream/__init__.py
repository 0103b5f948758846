"""The push path to the plant: an outbox written with every record, drained to MQTT and/or a webhook with
retries (store-and-forward), and a collector that writes a fleet's messages exactly once into a database."""

from edge.upstream.outbox import Outbox, OutboxListener
from edge.upstream.service import Upstream

__all__ = ["Outbox", "OutboxListener", "Upstream"]
