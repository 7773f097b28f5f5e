"""Who may use OPA's own REST API: three bearer tokens, kept 0600 in the secrets directory.

OPA runs with `--authentication=token --authorization=basic`, so every call (but `GET /health`) is judged by
`data.system.authz` (policies/system/authz.rego). That policy ships in the signed bundle together with the SHA-256
of each token and its role, so OPA never holds a token itself and a new token means a new bundle:

- `reader` asks for decisions (the API guards);
- `writer` also replaces `data.accord.catalog` (the gate, `accord catalog apply`, the demo);
- `scraper` reads OPA's `/metrics` and nothing else (Prometheus; a token that does not expire, as a scraper's must
  not, which is why it may do no more).

Nothing else, neither policy writes nor raw data reads, is allowed to anyone over REST.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from pathlib import Path

from broker.adapters.opa import OpaPolicyEngine, read_token
from broker.config import Settings
from broker.errors import ConfigError
from broker.security.secrets import SECRET_BYTES, write_private

READER = "reader"
WRITER = "writer"
SCRAPER = "scraper"
ROLES = (READER, WRITER, SCRAPER)
DATA_FILE = "system/authz/data.json"  # where the token digests sit in the bundle: data.system.authz.tokens


def token_file(secrets_dir: Path, role: str) -> Path:
    if role not in ROLES:
        raise ConfigError(f"no OPA token role {role!r}; roles: {', '.join(ROLES)}")
    return secrets_dir / "opa" / f"{role}.token"


def token_file_for(settings: Settings, role: str) -> Path:
    """ACCORD_OPA_TOKEN_FILE when set (an OPA someone else runs), else the local secrets directory's for `role`."""
    return settings.opa_token_file or token_file(settings.secrets_dir, role)


def ensure_tokens(secrets_dir: Path) -> dict[str, Path]:
    """Every role's token, made on first use (exclusively, so services starting together agree)."""
    files = {role: token_file(secrets_dir, role) for role in ROLES}
    for path in files.values():
        with contextlib.suppress(FileExistsError):
            write_private(path, secrets.token_urlsafe(SECRET_BYTES), exclusive=True)
    return files


def rotate(secrets_dir: Path) -> dict[str, Path]:
    """New tokens for every role; OPA takes them with the next bundle (`accord local up` rebuilds and restarts)."""
    files = {role: token_file(secrets_dir, role) for role in ROLES}
    for path in files.values():
        write_private(path, secrets.token_urlsafe(SECRET_BYTES))
    return files


def digest(token: str) -> str:
    """What the bundle holds of a token: its SHA-256 (hex), as Rego's crypto.sha256 computes it."""
    return hashlib.sha256(token.encode()).hexdigest()


def bundle_data(secrets_dir: Path) -> dict[str, bytes]:
    """The bundle file that tells OPA's system policy which token digest has which role."""
    files = ensure_tokens(secrets_dir)
    tokens = {}
    for role, path in files.items():
        token = read_token(path)
        if token is None:  # removed between ensure and read
            raise ConfigError(f"{path} vanished while the policy bundle was built")
        tokens[digest(token)] = role
    return {DATA_FILE: json.dumps({"tokens": tokens}, sort_keys=True).encode()}


def opa_engine(url: str, settings: Settings, role: str) -> OpaPolicyEngine:
    """The OPA at `url`, called with `role`'s token (or ACCORD_OPA_TOKEN_FILE's)."""
    return OpaPolicyEngine(url, token_file=token_file_for(settings, role))
