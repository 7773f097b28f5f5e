"""Webhook rules that need no network: which addresses a notification may be sent to, and how a notification is
signed so its receiver can tell it came from Accord, unchanged and recently.

Signing follows GitHub's and Stripe's scheme. Each body's secret is derived from the service's master secret and
the registration (a new registration is a new secret), and shown to the body once. Every attempt is signed anew:

    X-Accord-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

A receiver recomputes v1 over the raw bytes it received, compares in constant time, and refuses a `t` more than
TOLERANCE_S from its own clock (a replayed request is then stale); `X-Accord-Delivery` is the same on every retry
and after a restart, so a receiver that remembers the ids it has seen drops duplicates (`verify` does the first
part).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from broker.errors import ConfigError, GovernanceError

SIGNATURE_HEADER = "X-Accord-Signature"
TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class Webhook:
    """A body's registered webhook: where to POST, and the registration its secret derives from."""

    url: str
    registration: str


# -- signing ------------------------------------------------------------------------------------------------------

def signing_secret(master: bytes, body: str, registration: str) -> str:
    """The secret a body's receiver verifies with; the master never leaves the service, the secret is shown once."""
    digest = hmac.new(master, f"accord-webhook\0{body}\0{registration}".encode(), hashlib.sha256).hexdigest()
    return f"{SECRET_PREFIX}{digest}"


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """The X-Accord-Signature value for `payload` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, payload)}"


def verify(secret: str, header: str, payload: bytes, now: float, tolerance_s: int = TOLERANCE_S) -> None:
    """What a receiver does: raise GovernanceError unless `header` signs `payload` with `secret` within the window."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise GovernanceError(f"{SIGNATURE_HEADER} has no t=<unix seconds>") from None
    if abs(now - timestamp) > tolerance_s:
        raise GovernanceError(f"{SIGNATURE_HEADER} is {abs(now - timestamp):.0f}s from now; the window is "
                              f"{tolerance_s}s, so this may be a replay")
    expected = _mac(secret, timestamp, payload)
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        raise GovernanceError(f"{SIGNATURE_HEADER} does not match the body: wrong secret, or the body was changed")


def _mac(secret: str, timestamp: int, payload: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()


# -- where notifications may go -----------------------------------------------------------------------------------

def parse_allow(text: str | None) -> tuple[Network, ...]:
    """ACCORD_WEBHOOK_ALLOW: comma-separated networks (`127.0.0.1/32,10.20.0.0/16`) the operator lets webhooks
    reach although they are not public."""
    networks = []
    for item in (text or "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"ACCORD_WEBHOOK_ALLOW: {item.strip()!r} is not a network such as "
                                  "127.0.0.1/32 or 10.0.0.0/8") from None
    return tuple(networks)


def check_url(url: str) -> tuple[str, str, int]:
    """The URL's scheme, host and port, or GovernanceError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise GovernanceError(f"webhook URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise GovernanceError(f"webhook URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise GovernanceError(f"webhook URL {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise GovernanceError(f"webhook URL {url!r} must not carry credentials; verify the signature instead")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def refusal(address: Address, allow: Sequence[Network]) -> str | None:
    """Why a notification may not be sent to `address` (None: it may). Only public unicast addresses are reached,
    unless the operator allow-listed a network holding the address; an IPv6 address that embeds an IPv4 one is
    judged by the IPv4 address it leads to."""
    if any(address.version == net.version and address in net for net in allow):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return refusal(embedded, allow)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def first_allowed(addresses: Iterable[Address], allow: Sequence[Network]) -> Address:
    """The address to connect to, when every address the host resolved to may be reached; else GovernanceError.

    All must pass, not one: a host that resolves to a public and a private address could be reached at either.
    """
    found = list(dict.fromkeys(addresses))
    if not found:
        raise GovernanceError("the host resolved to no address")
    for address in found:
        why = refusal(address, allow)
        if why is not None:
            raise GovernanceError(f"webhooks are not sent to private or internal addresses: {why} (an operator "
                                  "may allow a network with ACCORD_WEBHOOK_ALLOW)")
    return found[0]


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
