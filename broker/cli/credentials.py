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


@credentials_cli.command("rotate-pseudonym-key")
def rotate_pseudonym_key(
    subscriber: Annotated[str, typer.Option(help="the body whose pseudonyms change, or * for every subscriber")] = "*",
    notice: Annotated[str, typer.Option(help="how long until the new key is used: 15m, 8h, 7d")] = "1d",
    token: Annotated[str | None, typer.Option(help="the operator's bearer token, or @FILE",
                                              envvar="ACCORD_TOKEN")] = None,
) -> None:
    """Make the next pseudonym master key and announce when the gates start using it (Accord's operator).

    The new master is written to the secrets directory, which every gate worker must share; the old ones stay, so
    pseudonyms made before the rotation can still be re-derived. Subscribers see the version in each delivery's
    `accord.pseudonym-key` header."""
    from broker.cli.governance import call, parse_actor
    from broker.security.secrets import new_pseudonym_master

    acting = parse_actor(token)
    wait = parse_ttl(notice)
    version = new_pseudonym_master(current_settings().secrets_dir)
    answer = call("POST", "/pseudonym-keys/rotate", acting,
                  {"version": version, "subscriber": subscriber, "notice_s": int(wait.total_seconds())})
    typer.echo(f"pseudonym key version {version} for {subscriber} announced at control offset "
               f"{answer['control']['offset']}; in use {notice} from now")


@credentials_cli.command("receipt-key")
def receipt_key(
    body: Annotated[str, typer.Option(help="the subscribing body whose receipts the key signs")],
    out: Annotated[Path, typer.Option(help="directory for the pair: the private key 0600, the public key beside")],
    register: Annotated[bool, typer.Option(help="also register the public key with the governance service (needs "
                                                "--token, a token of the same body)")] = False,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="ACCORD_TOKEN", metavar="TOKEN|@FILE", show_default=False,
        help="with --register: an API token of the body, or @file holding it")] = None,
) -> None:
    """Make an Ed25519 key pair for signing the body's delivery receipts, here (the private key never leaves the
    body); its id is the public key's fingerprint. Register the public key with --register."""
    from broker.domain.receipts import public_key_text
    from broker.security.receipt_keys import make_receipt_key

    try:
        key, private, public = make_receipt_key(out, body)
    except AccordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"receipt key {private.stem.rsplit('-', 1)[-1]} for {body}: private key {private} (mode 0600, keep "
               f"it with {body}), public key {public}")
    if register:
        _register(body, public_key_text(key.public_key()), token)


def _register(body: str, public_key: str, token: str | None) -> None:
    from broker.cli.governance import call, fail, parse_actor

    answer = call("POST", "/receipt-keys", parse_actor(token), {"public_key": public_key})
    if answer["body"] != body:
        fail(f"the token is {answer['body']}'s, so the key was registered for {answer['body']}, not {body}; "
             f"retire it with `accord credentials retire-receipt-key {answer['key_id']}`")
    typer.echo(f"registered receipt key {answer['key_id']} for {answer['body']}")


@credentials_cli.command("register-receipt-key")
def register_receipt_key(
    public: Annotated[Path, typer.Argument(help="the public key file (.pub) `receipt-key` wrote")],
    token: Annotated[str | None, typer.Option(
        "--token", envvar="ACCORD_TOKEN", metavar="TOKEN|@FILE", show_default=False,
        help="an API token of the body the key is for, or @file holding it")] = None,
) -> None:
    """Register a receipt public key for the token's body with the governance service (authorised by OPA, on the
    audit trail)."""
    from broker.cli.governance import call, parse_actor

    answer = call("POST", "/receipt-keys", parse_actor(token), {"public_key": _read_text(public)})
    typer.echo(f"registered receipt key {answer['key_id']} for {answer['body']}")


@credentials_cli.command("retire-receipt-key")
def retire_receipt_key(
    key_id: Annotated[str, typer.Argument(help="the key's id (fingerprint)")],
    token: Annotated[str | None, typer.Option(
        "--token", envvar="ACCORD_TOKEN", metavar="TOKEN|@FILE", show_default=False,
        help="an API token of the key's body, or @file holding it")] = None,
) -> None:
    """Retire one of the body's receipt keys: receipts signed with it are refused from now on."""
    from broker.cli.governance import call, parse_actor

    answer = call("POST", f"/receipt-keys/{key_id}/retire", parse_actor(token))
    typer.echo(f"receipt key {answer['key_id']} of {answer['body']} retired at {answer['retired_at']}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read the public key {path}: {exc}", err=True)
        raise typer.Exit(1) from None
