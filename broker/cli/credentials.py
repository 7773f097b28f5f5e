"""`accord credentials token|rotate-signing-key|revoke|rotate-opa-tokens`: API tokens, and OPA's own tokens.

Keys and revocations live in the secrets directory (0600). A token is printed, or written to a 0600 file with
`--out`; nothing here logs one.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.cli.context import current_settings
from broker.clock import system_clock
from broker.errors import AccordError, ConfigError
from broker.security import api_tokens

credentials_cli = typer.Typer(help="API credentials: issue tokens, rotate the signing key, revoke a body's tokens.",
                              no_args_is_help=True)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_ttl(text: str) -> dt.timedelta:
    """`90s`, `15m`, `8h` or `7d` as a duration."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match is None:
        raise ConfigError(f"--ttl {text!r} is not a duration such as 15m, 8h or 7d")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def check_holder(catalog_dir: Path, body: str, role: str) -> None:
    """The body is in the catalog and holds the role (Accord's own service and operator identities aside)."""
    if body == api_tokens.SERVICE_BODY and role in (api_tokens.SERVICE_ROLE, api_tokens.OPERATOR_ROLE):
        return
    from broker.catalog import load_catalog

    bodies = load_catalog(catalog_dir).bodies
    if body not in bodies:
        raise AccordError(f"no body {body!r} in {catalog_dir}/bodies.yaml; known: {', '.join(sorted(bodies))}")
    roles = bodies[body].roles
    if role not in roles:
        raise AccordError(f"{body} holds no role {role!r} in the catalog; its roles: {', '.join(roles) or 'none'}")


@credentials_cli.command("token")
def token(
    body: Annotated[str, typer.Option(help="the body's id in catalog/bodies.yaml (accord for a service or the "
                                           "operator)")],
    role: Annotated[str, typer.Option(help="one of the body's roles (service for Accord's own services, operator "
                                           "for whoever applies the catalog)")],
    person: Annotated[str, typer.Option(help="who will use it, for the record (an email or staff id)")],
    ttl: Annotated[str, typer.Option(help="how long it is valid: 15m, 8h, 7d (at most 30d)")] = "8h",
    out: Annotated[Path | None, typer.Option(help="write it to this file (mode 0600) instead of printing")] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog directory (default: ACCORD_CATALOG_DIR)")] = None,
    link: Annotated[bool, typer.Option(help="print a one-time console sign-in link instead (valid 15 minutes "
                                            "unless --ttl says less; the console takes it once)")] = False,
) -> None:
    """Issue a signed token for a person acting for a body in one of its roles."""
    check_holder(catalog or current_settings().catalog_dir, body, role)
    key = api_tokens.signing_key(current_settings().secrets_dir)
    if link:
        typer.echo(sign_in_link(key, body, role, person, min(parse_ttl(ttl), api_tokens.SIGN_IN_TTL)))
        return
    issued = api_tokens.issue(key, body, role, person, parse_ttl(ttl), system_clock())
    if out is None:
        typer.echo(issued)
        return
    api_tokens.write_token(out, issued)
    typer.echo(f"token for {body}:{role}:{person} written to {out} (mode 0600), valid for {ttl}", err=True)


def sign_in_link(key: Ed25519PrivateKey, body: str, role: str, person: str,
                 ttl: dt.timedelta = api_tokens.SIGN_IN_TTL) -> str:
    """A one-time console sign-in link: the console's address (ACCORD_CONSOLE_URL, or the local one) and a token
    only the console's sign-in takes."""
    if body == api_tokens.SERVICE_BODY:
        raise AccordError("sign-in links are for people of member bodies; Accord's service and operator identities "
                          "use tokens")
    token = api_tokens.issue(key, body, role, person, ttl, system_clock(), use=api_tokens.SIGN_IN)
    return f"{console_url()}/sign-in?link={token}"


def console_url() -> str:
    settings = current_settings()
    if settings.console_url:
        return settings.console_url.rstrip("/")
    from broker.local.stack import LocalStack

    endpoints = LocalStack(settings).endpoints()
    if endpoints is None or not endpoints.console_url:
        raise AccordError("no console address: set ACCORD_CONSOLE_URL, or run `accord local up`")
    return endpoints.console_url


@credentials_cli.command("rotate-signing-key")
def rotate_signing_key() -> None:
    """Make a new signing key: every token issued before is refused from now on."""
    directory = current_settings().secrets_dir
    key = api_tokens.rotate_signing_key(directory)
    typer.echo(f"new API signing key {api_tokens.key_id(key.public_key())} in {directory}; every earlier token is "
               "refused. Copy api-signing.pub to services on other hosts and issue new tokens.")


@credentials_cli.command("rotate-opa-tokens")
def rotate_opa_tokens() -> None:
    """New tokens for calling OPA (reader and writer); the local OPA restarts with a bundle that knows only them."""
    from broker.local.stack import LocalStack
    from broker.security import opa_tokens

    settings = current_settings()
    files = opa_tokens.rotate(settings.secrets_dir)
    restarted = LocalStack(settings).refresh_opa()
    typer.echo(f"new OPA tokens in {files[opa_tokens.READER].parent}; "
               + ("the local OPA restarted with them, and running services read them on their next refusal."
                  if restarted else "OPA takes them with its next bundle (`accord local up` builds it)."))


@credentials_cli.command("revoke")
def revoke(body: Annotated[str, typer.Option(help="the body whose tokens to refuse")]) -> None:
    """Refuse every token of a body issued up to now; tokens issued afterwards are accepted."""
    cutoff = api_tokens.revoke(current_settings().secrets_dir, body, system_clock())
    when = dt.datetime.fromtimestamp(cutoff, dt.UTC).isoformat().replace("+00:00", "Z")
    typer.echo(f"tokens of {body} issued before {when} are refused")
