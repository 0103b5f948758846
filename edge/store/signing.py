"""The station's Ed25519 key: it signs the chain heads an upstream system anchors.

Created on first start in the data folder (private key readable by the service user only). Whoever
holds a signed head can later prove the station's record up to that point was not rewritten."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "station-key.pem"


class StationKey:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def load_or_create(cls, data_dir: Path) -> StationKey:
        path = data_dir / KEY_FILE
        if path.is_file():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key; move it away to make a new one")
            return cls(loaded)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # Written whole and synced under a temporary name, then linked into place: a full disk, a kill or a power
        # cut never leaves an empty or partial key that every later start would refuse.
        temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(pem)
                os.fsync(handle.fileno())
            os.link(temporary, path)  # refuses, like O_EXCL, when another process made the key meanwhile
        except FileExistsError:
            return cls.load_or_create(data_dir)
        finally:
            temporary.unlink(missing_ok=True)
        folder = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(folder)  # the new name survives a power cut too
        finally:
            os.close(folder)
        return cls(key)

    @property
    def public_hex(self) -> str:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def sign(self, text: str) -> str:
        return self._key.sign(text.encode()).hex()


def verify_signature(public_hex: str, text: str, signature_hex: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature_hex),
                                                                              text.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def head_text(station: str, at: str, verdicts: tuple[int, str], audit: tuple[int, str]) -> str:
    """The exact text a chain head signature covers."""
    return (f"edge-inspect chain head v1\nstation={station}\nat={at}\nverdicts={verdicts[0]}:{verdicts[1]}\n"
            f"audit={audit[0]}:{audit[1]}")
