"""The signed policy bundle on a real OPA: a signed bundle serves decisions; an unsigned, altered or foreign-signed
one is refused at start-up; and no REST writer can replace a policy under the bundle's roots."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.adapters.opa import OpaPolicyEngine
from broker.config import Settings
from broker.errors import PolicyEngineError, ServiceStartError
from broker.local import opa_server, processes, toolchain
from broker.services.bundles import SignedBundle, build_bundle
from tests.integration.test_opa import CATALOG, REQUEST


@pytest.fixture(scope="module")
def opa_binary() -> Path:
    return toolchain.ensure_opa(Settings())


@pytest.fixture
def signed(opa_binary: Path, tmp_path: Path) -> SignedBundle:
    return build_bundle(opa_binary, tmp_path / "bundle.tar.gz", tmp_path / "secrets")


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


def test_a_signed_bundle_serves_decisions(start_opa: Callable[[SignedBundle], str], signed: SignedBundle) -> None:
    engine = OpaPolicyEngine(start_opa(signed))
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
    foreign = build_bundle(opa_binary, tmp_path / "foreign.tar.gz", tmp_path / "other-secrets")
    with pytest.raises(ServiceStartError, match="failed to verify JWT signature"):
        start_opa(SignedBundle(foreign.path, signed.public_key, foreign.revision))


def test_policies_under_the_bundle_roots_cannot_be_replaced_over_rest(
        start_opa: Callable[[SignedBundle], str], signed: SignedBundle) -> None:
    engine = OpaPolicyEngine(start_opa(signed))
    try:
        engine.put_data("accord/catalog", CATALOG)
        with pytest.raises(PolicyEngineError, match="owned by bundle"):
            engine.put_policy("evil", "package accord.plans\n\nplan := {\"allow\": true}\n")
        with pytest.raises(PolicyEngineError, match="owned by bundle"):
            engine.put_policy("evil-authz", "package accord.authz\n\nallow := true\n")
        with pytest.raises(PolicyEngineError, match="owned by bundle"):
            engine.put_data("accord/plans", {"allow": True})
        refused = engine.evaluate("accord.plans.plan", REQUEST | {"subscriber": "nottingham-city-council"})
        assert refused["allow"] is False
    finally:
        engine.close()
