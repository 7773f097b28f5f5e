"""Accord's policies as a signed OPA bundle: OPA loads them only from it, so no REST writer can replace them.

The bundle holds every non-test Rego module under policies/ (and any static data.json/data.yaml there), plus the
digests of the OPA API tokens (services/opa_tokens.py) that policies/system/authz.rego checks every call against.
Its roots are the packages those modules declare, never `accord/catalog`, which the gate keeps writing from the
control topic.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ConfigError, SetupError
from broker.security import opa_tokens
from broker.security.key_files import ed25519_key

SIGNING_ALG = "EdDSA"  # `opa build --signing-alg` and `opa run --signing-alg` both accept it (Ed25519 keys)
PRIVATE_KEY_FILE = "policy-bundle.key"
PUBLIC_KEY_FILE = "policy-bundle.pub"
CATALOG_ROOT = "accord/catalog"
DATA_FILES = ("data.json", "data.yaml", "data.yml")
# Unlike the audit key, nothing signed with this key outlives a rebuild: a new key costs one bundle and a restart.
_REPLACE = "delete it (and its .pub) and build the bundle again; then restart OPA with the new public key"
_PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SignedBundle:
    """A bundle file and the public key OPA verifies it with."""

    path: Path
    public_key: Path
    revision: str


def bundle_signing_key(secrets_dir: Path) -> Path:
    """The private key (0600) bundles are signed with, made on first use; its public key is written beside it."""
    private = secrets_dir / PRIVATE_KEY_FILE
    ed25519_key(private, secrets_dir / PUBLIC_KEY_FILE, _REPLACE)
    return private


def bundle_files(policy_dir: Path) -> dict[str, bytes]:
    """What goes in the bundle, by path inside it: non-test Rego modules and static data files."""
    found = {path.relative_to(policy_dir).as_posix(): path.read_bytes()
             for path in sorted(policy_dir.rglob("*"))
             if path.is_file() and ((path.suffix == ".rego" and not path.name.endswith("_test.rego"))
                                    or path.name in DATA_FILES)}
    if not any(name.endswith(".rego") for name in found):
        raise ConfigError(f"{policy_dir} holds no Rego policies to bundle")
    return found


def revision(files: dict[str, bytes]) -> str:
    """A content hash: the same policies always give the same revision, any change a new one."""
    digest = hashlib.sha256()
    for name, content in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return f"p-{digest.hexdigest()[:16]}"


def roots(files: dict[str, bytes]) -> list[str]:
    """The data paths the bundle owns: each module's package and each data file's directory, outermost only."""
    paths = {match.replace(".", "/") for name, content in files.items() if name.endswith(".rego")
             for match in _PACKAGE.findall(content.decode())}
    paths |= {str(Path(name).parent.as_posix()) for name in files if Path(name).name in DATA_FILES}
    if "." in paths:
        raise ConfigError("a data file at the top of policies/ would make the bundle own all data: move it into "
                          "the directory of its package")
    for path in paths:
        if _overlaps(path, CATALOG_ROOT):
            raise ConfigError(f"package or data path {path!r} overlaps {CATALOG_ROOT}, which the gate writes at run "
                              "time from the control topic: use another package")
    return sorted(p for p in paths if not any(other != p and _overlaps(other, p) and len(other) < len(p)
                                              for other in paths))


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(f"{b}/") or b.startswith(f"{a}/")


def deployment_files(secrets_dir: Path, policy_dir: Path) -> dict[str, bytes]:
    """The bundle's files for this deployment: the policies and the digests of its OPA API tokens."""
    files = bundle_files(policy_dir)
    generated = opa_tokens.bundle_data(secrets_dir)
    if clash := files.keys() & generated.keys():
        raise ConfigError(f"{', '.join(sorted(clash))} in {policy_dir} would replace what Accord generates there")
    return files | generated


def build_bundle(opa: Path, output: Path, secrets_dir: Path, policy_dir: Path) -> SignedBundle:
    """Build and sign the bundle of `policy_dir` into `output` (replaced atomically); returns what OPA needs."""
    files = deployment_files(secrets_dir, policy_dir)
    bundle_revision = revision(files)
    manifest = {"revision": bundle_revision, "roots": roots(files)}
    key = bundle_signing_key(secrets_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="accord-bundle-") as staging:
        stage = Path(staging) / "bundle"
        for name, content in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_bytes(content)
        (stage / ".manifest").write_text(json.dumps(manifest, sort_keys=True))
        partial = output.resolve().with_name(f".{output.name}.{os.getpid()}")
        # Run inside the staging directory so the bundle's file names are relative to its root.
        result = subprocess.run(
            [str(opa), "build", "--bundle", ".", "--signing-key", str(key), "--signing-alg", SIGNING_ALG,
             "--output", str(partial)], cwd=stage, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ConfigError(f"`opa build` refused the policies in {policy_dir}:\n{result.stderr.strip()}")
        os.replace(partial, output)  # a reader (OPA starting) never sees half a bundle
    return SignedBundle(output, secrets_dir / PUBLIC_KEY_FILE, bundle_revision)


def revision_of(bundle: Path) -> str | None:
    """The revision in a bundle file's manifest; None if there is no readable bundle there."""
    try:
        with tarfile.open(bundle, "r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.name.lstrip("/") == ".manifest"), None)
            extracted = archive.extractfile(member) if member is not None else None
            manifest = json.loads(extracted.read()) if extracted is not None else {}
    except (OSError, tarfile.TarError, json.JSONDecodeError):
        return None
    value = manifest.get("revision") if isinstance(manifest, dict) else None
    return str(value) if value is not None else None


def ensure_bundle(opa: Path, output: Path, secrets_dir: Path, policy_dir: Path
                  ) -> tuple[SignedBundle, bool]:
    """The bundle at `output`, rebuilt when it is missing, behind `policy_dir` or the OPA tokens, or its signing key
    is gone; returns it and whether it was (re)built."""
    current = revision(deployment_files(secrets_dir, policy_dir))
    public = secrets_dir / PUBLIC_KEY_FILE
    if revision_of(output) == current and (secrets_dir / PRIVATE_KEY_FILE).exists() and public.exists():
        return SignedBundle(output, public, current), False
    if not opa.exists():
        raise SetupError(f"no OPA binary at {opa} to build the policy bundle with: run `accord local fetch`")
    return build_bundle(opa, output, secrets_dir, policy_dir), True
