"""The signed policy bundle on a real OPA: a signed bundle serves decisions; an unsigned, altered or foreign-signed
one is refused at start-up; and OPA's REST API answers only the tokens the bundle names, each within its role."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from broker.adapters.opa import OpaPolicyEngine, read_token
from broker.config import Settings
from broker.errors import PolicyEngineError, ServiceStartError
from broker.local import opa_server, processes, toolchain
from broker.security import opa_tokens
from broker.security.bundles import SignedBundle, build_bundle
from tests.conftest import POLICIES
from tests.integration.test_opa import CATALOG, REQUEST


@pytest.fixture(scope="module")
def opa_binary() -> Path:
    return toolchain.ensure_opa(Settings())


@pytest.fixture
def signed(opa_binary: Path, tmp_path: Path) -> SignedBundle:
    return build_bundle(opa_binary, tmp_path / "bundle.tar.gz", tmp_path / "secrets", POLICIES)


@pytest.fixture
def start_opa(opa_binary: Path, tmp_path: Path) -> Iterator[Callable[[SignedBundle], str]]:
    started: list[int] = []

    def start(bundle: SignedBundle) -> str:
        layout = opa_server.OpaLayout(tmp_path / f"opa-{len(started)}")
        try:
            _, url = opa_server.start(opa_binary, layout, timeout_s=30, bundle=bundle)
        finally:
            started.append(processes.read_pid(layout.pid_file) or 0)
        return url

    yield start
    for pid in started:
        processes.stop(pid or None, opa_server.MARKER)


def _engine(url: str, tmp_path: Path, role: str = opa_tokens.WRITER) -> OpaPolicyEngine:
    """An engine with `role`'s token from the secrets dir the `signed` bundle was built with."""
    return OpaPolicyEngine(url, token_file=opa_tokens.token_file(tmp_path / "secrets", role))


def _rewritten(bundle: SignedBundle, target: Path, change: Callable[[str, bytes], bytes | None]) -> SignedBundle:
    """A copy of `bundle` with each file passed through `change` (None leaves the file out), signature untouched."""
    with tarfile.open(bundle.path, "r:gz") as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            extracted = source.extractfile(member)
            content = change(member.name.lstrip("/"), extracted.read() if extracted is not None else b"")
            if content is not None:
                member.size = len(content)
                out.addfile(member, io.BytesIO(content))
    return SignedBundle(target, bundle.public_key, bundle.revision)


def test_a_signed_bundle_serves_decisions(start_opa: Callable[[SignedBundle], str], signed: SignedBundle,
                                          tmp_path: Path) -> None:
    engine = _engine(start_opa(signed), tmp_path)
    try:
        assert engine.ready()
        engine.put_data("accord/catalog", CATALOG)  # the catalog is outside the bundle's roots: data over REST
        plan = engine.evaluate("accord.plans.plan", REQUEST)
        assert plan["allow"] is True and plan["agreements"] == ["t1-leicester"]
    finally:
        engine.close()


def test_an_unsigned_bundle_is_refused(start_opa: Callable[[SignedBundle], str], signed: SignedBundle,
                                       tmp_path: Path) -> None:
    unsigned = _rewritten(signed, tmp_path / "unsigned.tar.gz",
                          lambda name, content: None if name == ".signatures.json" else content)
    with pytest.raises(ServiceStartError, match=r"missing \.signatures\.json"):
        start_opa(unsigned)


def test_a_bundle_altered_after_signing_is_refused(start_opa: Callable[[SignedBundle], str], signed: SignedBundle,
                                                   tmp_path: Path) -> None:
    def allow_everything(name: str, content: bytes) -> bytes:
        if name != "plans/plans.rego":
            return content
        assert b"default allow := false" in content
        return content.replace(b"default allow := false", b"default allow := true")

    tampered = _rewritten(signed, tmp_path / "tampered.tar.gz", allow_everything)
    with pytest.raises(ServiceStartError, match="digest mismatch"):
        start_opa(tampered)


def test_a_bundle_signed_with_another_key_is_refused(start_opa: Callable[[SignedBundle], str], signed: SignedBundle,
                                                     opa_binary: Path, tmp_path: Path) -> None:
    foreign = build_bundle(opa_binary, tmp_path / "foreign.tar.gz", tmp_path / "other-secrets", POLICIES)
    with pytest.raises(ServiceStartError, match="failed to verify JWT signature"):
        start_opa(SignedBundle(foreign.path, signed.public_key, foreign.revision))


def test_no_token_holder_can_replace_a_policy_over_rest(
        start_opa: Callable[[SignedBundle], str], signed: SignedBundle, tmp_path: Path) -> None:
    engine = _engine(start_opa(signed), tmp_path)
    try:
        engine.put_data("accord/catalog", CATALOG)
        for module, source in [("evil", "package accord.plans\n\nplan := {\"allow\": true}\n"),
                               ("evil-authz", "package accord.authz\n\nallow := true\n"),
                               ("other", "package other\n\nx := 1\n"),
                               ("sys", "package system.authz\n\nallow := true\n")]:
            with pytest.raises(PolicyEngineError, match="refused Accord's token"):
                engine.put_policy(module, source)
        with pytest.raises(PolicyEngineError, match="refused Accord's token"):
            engine.put_data("accord/plans", {"allow": True})
        refused = engine.evaluate("accord.plans.plan", REQUEST | {"subscriber": "nottingham-city-council"})
        assert refused["allow"] is False
    finally:
        engine.close()


def _status(method: str, url: str, token: str | None = None, body: Any = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, url, json=body, headers=headers, timeout=5).status_code


def test_opa_answers_only_the_tokens_in_its_bundle_and_each_within_its_role(
        start_opa: Callable[[SignedBundle], str], signed: SignedBundle, tmp_path: Path) -> None:
    url = start_opa(signed)
    reader = read_token(opa_tokens.token_file(tmp_path / "secrets", opa_tokens.READER))
    writer = read_token(opa_tokens.token_file(tmp_path / "secrets", opa_tokens.WRITER))
    decision = f"{url}/v1/data/accord/plans/plan"
    catalog = f"{url}/v1/data/accord/catalog"
    assert _status("GET", f"{url}/health?bundles") == 200  # supervisors need no token
    # Without a token, or with one OPA does not know, nothing: no decisions, no catalog, no data, no policies.
    for token in (None, "guess", f"{writer}x", ""):
        assert _status("POST", decision, token, {"input": REQUEST}) == 401
        assert _status("PUT", catalog, token, CATALOG) == 401
        assert _status("GET", f"{url}/v1/data", token) == 401
        assert _status("GET", f"{url}/v1/policies", token) == 401
    # The reader asks for decisions but cannot change the catalog the decisions are made from.
    assert _status("PUT", catalog, reader, CATALOG | {"revision": "c-forged"}) == 401
    assert _status("POST", decision, reader, {"input": REQUEST}) == 200
    # The writer keeps the catalog, and nothing else: no reading the token digests, no other data, no policies.
    assert _status("PUT", catalog, writer, CATALOG) == 204
    assert _status("GET", f"{url}/v1/data/system/authz/tokens", writer) == 401
    assert _status("PUT", f"{url}/v1/data/elsewhere", writer, {"x": 1}) == 401
    assert _status("PUT", f"{url}/v1/policies/other", writer, None) == 401
    assert _status("DELETE", catalog, writer) == 401


def test_rotated_tokens_lock_out_the_old_ones_and_running_engines_follow(
        opa_binary: Path, signed: SignedBundle, tmp_path: Path) -> None:
    layout = opa_server.OpaLayout(tmp_path / "rotating")
    _, url = opa_server.start(opa_binary, layout, timeout_s=30, bundle=signed)
    engine = _engine(url, tmp_path)  # a service running across the rotation
    old = read_token(opa_tokens.token_file(tmp_path / "secrets", opa_tokens.WRITER))
    asking = 4  # calls at once, as a gate's planner makes them: each on a connection of its own

    def ask_together() -> list[bool]:
        together = threading.Barrier(asking)

        def ask(_: int) -> bool:
            together.wait(10)
            return bool(engine.evaluate("accord.plans.plan", REQUEST)["allow"])
        with ThreadPoolExecutor(asking) as pool:
            return list(pool.map(ask, range(asking)))
    try:
        engine.put_data("accord/catalog", CATALOG)
        assert ask_together() == [True] * asking  # connections made with the old token
        # What `accord credentials rotate-opa-tokens` does for the local OPA: new tokens, a new bundle, a restart.
        opa_tokens.rotate(tmp_path / "secrets")
        rebuilt = build_bundle(opa_binary, signed.path, tmp_path / "secrets", POLICIES)
        assert rebuilt.revision != signed.revision  # the token digests are part of what the revision covers
        processes.stop(processes.read_pid(layout.pid_file), opa_server.MARKER)
        opa_server.start(opa_binary, layout, timeout_s=30, bundle=rebuilt, port=urlsplit(url).port)
        assert _status("PUT", f"{url}/v1/data/accord/catalog", old, CATALOG) == 401
        # Calls refused at the same time each follow the rotation: refused once, then sent with the file's new
        # token (none mistakes the token another call has just taken up for the one it was refused with). OPA came
        # back without the catalog, so each is answered with a refusal.
        assert ask_together() == [False] * asking
        engine.put_data("accord/catalog", CATALOG)
        assert engine.evaluate("accord.plans.plan", REQUEST)["allow"] is True
    finally:
        engine.close()
        processes.stop(processes.read_pid(layout.pid_file), opa_server.MARKER)
