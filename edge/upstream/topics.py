"""The topic tree and broker URLs: ROOT[/SITE/LINE]/STATION/KIND, KIND one of MESSAGE_KINDS or ``state``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edge.config import redact_url

MESSAGE_KINDS = ("verdicts", "batches", "alarms", "overrides")
STATE = "state"
REPLAY = "replay"  # to the station: verdicts a consumer found missing, to be sent again
DEFAULT_FLEET_TOPIC = "edge-inspect/#"


def station_prefix(station_id: str, root: str = "edge-inspect", site: str | None = None,
                   line: str | None = None) -> str:
    """The station's topic prefix, without a trailing slash: ``edge-inspect/<station id>`` by default."""
    return "/".join(level for level in (root, site, line, station_id) if level)


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used; the message names what is wrong (never the password)."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise BrokerUrlError(f"{redact_url(url)}: the broker URL must start with mqtt:// or mqtts://")
        try:
            port = parts.port
        except ValueError as exc:
            raise BrokerUrlError(f"{redact_url(url)}: the port is not a number from 1 to 65535") from exc
        if not parts.hostname:
            raise BrokerUrlError(f"{redact_url(url)}: no host (mqtt://HOST:PORT)")
        if parts.path not in ("", "/"):
            raise BrokerUrlError(f"{redact_url(url)}: a broker URL has no path (topics are set in the config)")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883), tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def __str__(self) -> str:  # what logs show: never the password
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"
