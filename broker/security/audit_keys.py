"""The audit trail's Ed25519 signing key on disk: the private key (0600) and its public key beside it (0644)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.errors import ConfigError
from broker.security.key_files import ed25519_key

PRIVATE_KEY_FILE = "audit-signing.key"
PUBLIC_KEY_FILE = "audit-signing.pub"
# A new key would not match the checkpoints already signed, so a damaged key is never silently replaced.
_RESTORE = "restore it from a backup; a new key would not match the checkpoints already signed"


def public_key_path(directory: Path) -> Path:
    return directory / PUBLIC_KEY_FILE


def audit_signing_key(directory: Path) -> Ed25519PrivateKey:
    """The key in `<dir>/audit-signing.key`, made on first use; its public key is written beside it."""
    return ed25519_key(directory / PRIVATE_KEY_FILE, public_key_path(directory), _RESTORE)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key PEM, e.g. the `audit-signing.pub` an operator was given."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no audit public key at {path}: pass the one the signing service wrote") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 audit key")
    return key
