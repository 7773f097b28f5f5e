"""The pure webhook rules: which addresses notifications may reach, what an allow-list lets through, and how a
receiver checks a signature (including a replay outside the window)."""

from __future__ import annotations

import ipaddress

import pytest

from broker.domain.webhooks import check_url, first_allowed, parse_allow, refusal, signature, signing_secret, verify
from broker.errors import ConfigError, GovernanceError

SECRET = signing_secret(b"m" * 32, "ukhsa", "reg-1")
BODY = b'{"event_id": "e-1", "type": "raised"}'


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("224.0.0.251", "multicast"),
    ("239.1.1.1", "multicast"), ("ff02::1", "multicast"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("100.64.0.1", "not a public address"),
    ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a00:1", "private"),
    ("2002:c0a8:101::1", "private"),
])
def test_internal_addresses_are_refused_and_say_why(address: str, why: str) -> None:
    found = refusal(ipaddress.ip_address(address), ())
    assert found is not None and why in found


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "::ffff:8.8.8.8"])
def test_public_addresses_are_reached(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), ()) is None


def test_an_allow_list_lets_exactly_its_networks_through() -> None:
    allow = parse_allow(" 127.0.0.1/32, 10.20.0.0/16 ,")
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow) is None
    assert refusal(ipaddress.ip_address("10.20.9.9"), allow) is None
    assert refusal(ipaddress.ip_address("10.21.0.1"), allow) is not None
    assert refusal(ipaddress.ip_address("::1"), allow) is not None
    assert parse_allow("") == () and parse_allow(None) == ()
    with pytest.raises(ConfigError, match="ACCORD_WEBHOOK_ALLOW: 'localhost'"):
        parse_allow("localhost")


def test_every_resolved_address_must_pass() -> None:
    public, private = ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.1")
    assert first_allowed([public, public], ()) == public
    with pytest.raises(GovernanceError, match=r"10\.0\.0\.1 is a private address"):
        first_allowed([public, private], ())
    with pytest.raises(GovernanceError, match="no address"):
        first_allowed([], ())


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://example.org/x", "must start with http"), ("https:///x", "names no host"),
    ("https://user:pw@example.org/x", "must not carry credentials"), ("https://example.org:99999/", "malformed"),
])
def test_unusable_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(GovernanceError, match=problem):
        check_url(url)
    assert check_url("https://example.org/hook") == ("https", "example.org", 443)
    assert check_url("http://127.0.0.1:8080/h") == ("http", "127.0.0.1", 8080)


def test_a_receiver_accepts_a_fresh_signature_and_refuses_changes_replays_and_other_secrets() -> None:
    header = signature(SECRET, 1_700_000_000, BODY)
    assert header.startswith("t=1700000000,v1=")
    verify(SECRET, header, BODY, now=1_700_000_100)
    with pytest.raises(GovernanceError, match="does not match"):
        verify(SECRET, header, BODY.replace(b"raised", b"closed"), now=1_700_000_000)
    with pytest.raises(GovernanceError, match="replay"):
        verify(SECRET, header, BODY, now=1_700_000_301)
    with pytest.raises(GovernanceError, match="does not match"):
        verify(signing_secret(b"m" * 32, "ukhsa", "reg-2"), header, BODY, now=1_700_000_000)
    with pytest.raises(GovernanceError, match="no t="):
        verify(SECRET, "v1=abc", BODY, now=1_700_000_000)
    assert SECRET.startswith("whsec_") and signing_secret(b"n" * 32, "ukhsa", "reg-1") != SECRET
