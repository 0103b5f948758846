"""Secrets: argon2 for PINs and passwords (slow on purpose), SHA-256 for random tokens (fast, and
enough for 256-bit secrets). Nothing here logs or returns a secret except where it is created."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge.access.errors import AccessRecordError

TOKEN_PREFIX = "ei_"
MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 128


@dataclass(frozen=True)
class HashParameters:
    """argon2id parameters. The defaults take about 60 ms per verify on a 2-core station PC
    (RFC 9106 / OWASP range); tests lower them through the station file."""

    time_cost: int = 2
    memory_kib: int = 65536
    parallelism: int = 2


class PinHasher:
    """Hashes and verifies PINs with argon2id; verifies against a dummy hash for unknown users so
    both take the same time. ``verifications`` counts argon2 runs (tests check throttling skips them)."""

    def __init__(self, parameters: HashParameters | None = None) -> None:
        p = parameters or HashParameters()
        self._hasher = PasswordHasher(time_cost=p.time_cost, memory_cost=p.memory_kib, parallelism=p.parallelism)
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._lock = threading.Lock()
        # at most one argon2 run per core at once: bounds CPU and memory (memory_kib each) under a flood
        self._slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        self.verifications = 0

    def hash(self, pin: str) -> str:
        """The argon2id hash of a PIN (AccessRecordError when it is too short); tens of ms."""
        check_pin(pin)
        with self._slots:
            return self._hasher.hash(pin)

    def verify(self, stored_hash: str | None, pin: str) -> bool:
        """True when ``pin`` matches; ``stored_hash=None`` (unknown user) costs the same and fails."""
        with self._lock:
            self.verifications += 1
        try:
            with self._slots:
                return self._hasher.verify(stored_hash or self._dummy, pin) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


def check_pin(pin: str) -> str:
    """The PIN, or AccessRecordError when it is too short or too long."""
    if len(pin) < MIN_PIN_LENGTH:
        raise AccessRecordError(f"a PIN or password needs at least {MIN_PIN_LENGTH} characters")
    if len(pin) > MAX_PIN_LENGTH:
        raise AccessRecordError(f"a PIN or password may have at most {MAX_PIN_LENGTH} characters")
    return pin


def new_token() -> str:
    """A fresh API token secret (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> str:
    """A fresh session or CSRF secret."""
    return secrets.token_urlsafe(32)


def csrf_token_for(cookie_secret: str) -> str:
    """A session's CSRF token, derived from its cookie secret (so GET /api/v1/session can hand it out again)."""
    return hmac.new(cookie_secret.encode("utf-8"), b"edge-inspect csrf", hashlib.sha256).hexdigest()


def digest(secret: str) -> str:
    """What is stored for a high-entropy secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time check of a secret against a stored digest."""
    return hmac.compare_digest(digest(secret), stored_digest)
