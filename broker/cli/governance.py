"""`accord dispute|emergency|break-glass|webhook`: the governance API from the command line, acting as a person.

Every command sends an API token (`--token TOKEN`, `--token @FILE` or ACCORD_TOKEN; `accord credentials token`
issues one): the token names the acting body, role and person, and the governance service decides what they may do.
Errors the API returns are printed as `error: <message>` and exit with status 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from broker.adapters.governance_http import GovernanceApiError, GovernanceClient
from broker.cli.context import current_settings
from broker.cli.policy import ActingAs, running_endpoints

dispute_cli = typer.Typer(help="Disputes over data sharing: raise, list, show, comment, decide, appeal.",
                          no_args_is_help=True)
emergency_cli = typer.Typer(help="Emergency levels: declare, lift and show them (declarers only may change them).",
                            no_args_is_help=True)
webhook_cli = typer.Typer(help="Where the governance service sends your body's notifications.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON as it is")]
DisputeId = Annotated[str, typer.Argument(metavar="DISPUTE", help="dispute id, e.g. d-0123456789")]
Outcome = Annotated[str, typer.Option(help="granted, granted-in-part, granted-for-period or refused")]
Reason = Annotated[str, typer.Option(help="why (recorded and shown to the parties)")]
Fields = Annotated[list[str] | None, typer.Option("--field", help="a field, repeatable (default: all sought)")]
Areas = Annotated[list[str] | None, typer.Option("--area", help="an area code, repeatable (default: all sought)")]
Until = Annotated[str | None, typer.Option(help="end of access, RFC 3339 with a time zone")]
Transforms = Annotated[list[str] | None, typer.Option(
    "--transform", help="grant a field transformed, repeatable: dob=age-band, name=mask:2, nhs_number=pseudonymise, "
    "postcode=postcode-district (other granted fields are kept)")]
Scope = Annotated[str, typer.Option(help="national, or an E12 region code such as E12000004")]

# The key data `show` prints for each timeline event, in this order.
SHOWN = ("tier", "level", "deadline", "outcome", "until", "fields", "transforms", "areas", "reason", "why", "text",
         "scope", "url")


# -- talking to the governance API --------------------------------------------------------------------------------

def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def parse_actor(text: str | None) -> str:
    """The bearer token given as itself or as `@file`; a missing one ends the command with a clear error."""
    if not text:
        fail("say who is acting: --token TOKEN or --token @FILE (or set ACCORD_TOKEN); "
             "`accord credentials token` issues one")
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text().strip()
        except OSError as exc:
            fail(f"cannot read the token file {text[1:]}: {exc.strerror}")
    if not text or not text.isascii() or any(c.isspace() for c in text):
        fail("the token is empty or not a token (one line of ASCII, no spaces)")
    return text


def _client() -> GovernanceClient:
    return GovernanceClient(current_settings().governance_url or running_endpoints().governance_url)


def call(method: str, path: str, token: str, body: Mapping[str, Any] | None = None,
         params: Mapping[str, str] | None = None) -> Any:
    """The API's JSON answer, or `error: <message>` and exit 1."""
    try:
        with _client() as client:
            return client.call(method, path, token, body, params)
    except GovernanceApiError as exc:
        fail(str(exc))


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def _tier(dispute: Mapping[str, Any]) -> str:
    tier = int(dispute.get("tier", -1))
    return "-" if tier < 0 else str(tier + 1)


def _who(actor: Mapping[str, Any] | None) -> str:
    return "-" if not actor else f"{actor['body']}:{actor['role']}:{actor['person']}"


# -- disputes -----------------------------------------------------------------------------------------------------

@dispute_cli.command("raise")
def dispute_raise(
    stream: Annotated[str, typer.Argument(help="the stream in dispute, e.g. ukhsa.positive-tests")],
    kind: Annotated[str, typer.Option(help="refusal, restriction, or grant-contested (the publisher only)")],
    role: Annotated[str, typer.Option(help="the subscriber's role that would receive the data")],
    purpose: Annotated[str, typer.Option(help="the purpose the data is for")],
    justification: Annotated[str, typer.Option(help="why the data is needed (or must stop)")],
    acting_as: ActingAs = None,
    subscriber: Annotated[str | None, typer.Option(help="the receiving body (default: the acting body)")] = None,
    field: Fields = None,
    area: Areas = None,
    until: Until = None,
    decision_id: Annotated[str | None, typer.Option(help="the refusal, agreement or grant challenged")] = None,
    policy_revision: Annotated[str | None, typer.Option(help="the catalog revision of that decision")] = None,
    urgency: Annotated[str, typer.Option(help="routine, urgent or immediate")] = "routine",
    evidence: Annotated[list[str] | None, typer.Option(help="a link or reference, repeatable")] = None,
    backfill: Annotated[str | None, typer.Option(
        help="history to receive once granted: an ISO 8601 duration (P28D) or a date (2026-11-01)")] = None,
) -> None:
    """Raise a dispute; it climbs the escalation ladder until decided, and a decisive default ends it."""
    token = parse_actor(acting_as)
    body = {"kind": kind, "stream": stream, "role": role, "purpose": purpose, "justification": justification,
            "subscriber": subscriber, "fields": field or [], "areas": area, "until": until,
            "decision_id": decision_id, "policy_revision": policy_revision, "urgency": urgency,
            "evidence": evidence or [], **({"backfill": backfill} if backfill else {})}
    dispute = call("POST", "/disputes", token, body)
    typer.echo(f"raised dispute {dispute['id']}: {dispute['state']} at tier {_tier(dispute)}, "
               f"deadline {dispute['deadline']}")


@dispute_cli.command("list")
def dispute_list(
    acting_as: ActingAs = None,
    state: Annotated[str | None, typer.Option(help="e.g. awaiting, enforced, closed")] = None,
    body: Annotated[str | None, typer.Option(help="only disputes this body is a party to")] = None,
    stream: Annotated[str | None, typer.Option(help="only disputes over this stream")] = None,
    deadline_before: Annotated[str | None, typer.Option(help="only deadlines before this RFC 3339 time")] = None,
    as_json: AsJson = False,
) -> None:
    """List disputes, oldest first."""
    filters = {"state": state, "body": body, "stream": stream, "deadline_before": deadline_before}
    answer = call("GET", "/disputes", parse_actor(acting_as),
                  params={key: value for key, value in filters.items() if value is not None})
    if as_json:
        _echo_json(answer)
        return
    for line in dispute_table(answer["disputes"]):
        typer.echo(line)


def dispute_table(disputes: Sequence[Mapping[str, Any]]) -> list[str]:
    if not disputes:
        return ["no disputes"]
    rows = [("ID", "STATE", "TIER", "DEADLINE", "STREAM", "SUBSCRIBER")]
    # Disputes the caller may not read in full come as summaries, without tier, deadline or subscriber.
    rows += [(d["id"], d["state"], _tier(d), d.get("deadline") or "-", d["stream"], d.get("subscriber") or "-")
             for d in disputes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


@dispute_cli.command("show")
def dispute_show(ident: DisputeId, acting_as: ActingAs = None, as_json: AsJson = False) -> None:
    """Show a dispute and its timeline."""
    dispute = call("GET", f"/disputes/{ident}", parse_actor(acting_as))
    if as_json:
        _echo_json(dispute)
        return
    for line in describe(dispute):
        typer.echo(line)


def describe(dispute: Mapping[str, Any]) -> list[str]:
    """A dispute for people: what is disputed, where it stands, then one line per event."""
    lines = [
        f"dispute {dispute['id']} ({dispute['kind']}, {dispute['urgency']}): {dispute['stream']} from "
        f"{dispute['publisher']} to {dispute['subscriber']} as {dispute['role']} for {dispute['purpose']}",
        f"state {dispute['state']}, tier {_tier(dispute)}, level {dispute['level']}, "
        f"deadline {dispute.get('deadline') or '-'}",
        f"justification: {dispute['justification']}",
    ]
    if dispute.get("decision"):
        decision = dispute["decision"]
        lines.append(f"decision: {decision.get('outcome')}: {decision.get('reason', '')}".rstrip(": "))
    lines.append("timeline:")
    lines += [f"  {event['at']}  {event['type']:<16} {_who(event.get('actor')):<36} {_key_data(event)}".rstrip()
              for event in dispute.get("timeline", [])]
    return lines


def _key_data(event: Mapping[str, Any]) -> str:
    data = event.get("data") or {}
    shown = []
    for key in SHOWN:
        value = data.get(key)
        if value is None or value == []:
            continue
        if key == "tier":
            value = int(value) + 1
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict):  # transforms: dob:generalise/age-band,name:mask
            value = ",".join(f"{k}:{v.get('transform')}{'/' + v['method'] if v.get('method') else ''}"
                             for k, v in value.items())
        shown.append(f"{key}={value}")
    return " ".join(shown)


@dispute_cli.command("comment")
def dispute_comment(ident: DisputeId, text: Annotated[str, typer.Argument(help="the comment")],
                    acting_as: ActingAs = None) -> None:
    """Add a comment to a dispute's timeline (parties and deciders)."""
    call("POST", f"/disputes/{ident}/comments", parse_actor(acting_as), {"text": text})
    typer.echo(f"commented on dispute {ident}")


def parse_transforms(texts: list[str] | None) -> dict[str, dict[str, Any]] | None:
    """`--transform dob=age-band`, `name=mask:2`, `nhs_number=pseudonymise`, `postcode=postcode-district`,
    `dob=age-band@specimen_date` as the decision API's `transforms`."""
    if not texts:
        return None
    found: dict[str, dict[str, Any]] = {}
    for text in texts:
        name, sep, how = text.partition("=")
        word, _, arg = how.partition(":") if how.startswith("mask") else how.partition("@")
        if not sep or not name or word not in _TRANSFORM_WORDS or (arg and word not in ("mask", "age-band")):
            fail(f"--transform {text!r}: write FIELD=HOW, HOW one of keep, pseudonymise, mask[:N], "
                 "age-band[@DATE_FIELD], postcode-district, lsoa")
        spec = dict(_TRANSFORM_WORDS[word])
        if arg:
            if word == "mask" and not arg.isdigit():
                fail(f"--transform {text!r}: mask:N takes a whole number of characters to keep")
            spec["keep_last" if word == "mask" else "at"] = int(arg) if word == "mask" else arg
        found[name] = spec
    return found


_TRANSFORM_WORDS: dict[str, dict[str, Any]] = {
    "keep": {"transform": "keep"}, "pseudonymise": {"transform": "pseudonymise"}, "mask": {"transform": "mask"},
    **{method: {"transform": "generalise", "method": method} for method in ("age-band", "postcode-district", "lsoa")},
}


def _decide(path: str, ident: str, token: str, outcome: str, reason: str, fields: list[str] | None,
            areas: list[str] | None, until: str | None, transforms: list[str] | None = None) -> None:
    body = {"outcome": outcome, "reason": reason, "fields": fields, "areas": areas, "until": until,
            "transforms": parse_transforms(transforms)}
    answer = call("POST", f"/disputes/{ident}/{path}", token, body)
    dispute = answer["dispute"]
    if answer["decided"]:
        typer.echo(f"dispute {ident} decided: {dispute['decision']['outcome']} (now {dispute['state']})")
    else:
        typer.echo(f"approval recorded on dispute {ident} at tier {_tier(dispute)} "
                   f"({len(dispute['approvals'])} so far); not decided yet")


@dispute_cli.command("decide")
def dispute_decide(ident: DisputeId, outcome: Outcome, reason: Reason, acting_as: ActingAs = None,
                   field: Fields = None, area: Areas = None, until: Until = None,
                   transform: Transforms = None) -> None:
    """Decide a dispute at its current tier (one approval where the tier needs several)."""
    _decide("decision", ident, parse_actor(acting_as), outcome, reason, field, area, until, transform)


@dispute_cli.command("approve")
def dispute_approve(ident: DisputeId, outcome: Outcome, reason: Reason, acting_as: ActingAs = None,
                    field: Fields = None, area: Areas = None, until: Until = None,
                    transform: Transforms = None) -> None:
    """Approve an outcome at a tier that needs N approvals; decided once N agree."""
    _decide("approvals", ident, parse_actor(acting_as), outcome, reason, field, area, until, transform)


@dispute_cli.command("appeal")
def dispute_appeal(ident: DisputeId, reason: Reason, acting_as: ActingAs = None) -> None:
    """Appeal an enforced decision to the next tier (a party, within the appeal window)."""
    dispute = call("POST", f"/disputes/{ident}/appeal", parse_actor(acting_as), {"reason": reason})
    typer.echo(f"appealed dispute {ident}: now at tier {_tier(dispute)}, deadline {dispute['deadline']}")


# -- emergencies, break-glass, webhooks ---------------------------------------------------------------------------

@emergency_cli.command("declare")
def emergency_declare(level: Annotated[str, typer.Argument(help="enhanced or emergency (normal lifts)")],
                      reason: Reason, acting_as: ActingAs = None, scope: Scope = "national") -> None:
    """Declare an emergency level; open dispute deadlines shorten to the level's."""
    answer = call("POST", "/emergency", parse_actor(acting_as), {"scope": scope, "level": level, "reason": reason})
    typer.echo(f"{answer['scope']}: level {answer['level']}")


@emergency_cli.command("lift")
def emergency_lift(reason: Reason, acting_as: ActingAs = None, scope: Scope = "national") -> None:
    """Lift the declaration for a scope, back to normal."""
    answer = call("POST", "/emergency/lift", parse_actor(acting_as), {"scope": scope, "reason": reason})
    typer.echo(f"{answer['scope']}: level {answer['level']}")


@emergency_cli.command("status")
def emergency_status(acting_as: ActingAs = None, as_json: AsJson = False) -> None:
    """Show the declarations in force (any scope not listed is at normal)."""
    levels = call("GET", "/emergency", parse_actor(acting_as))["levels"]
    if as_json:
        _echo_json(levels)
        return
    if not levels:
        typer.echo("no declarations in force: normal everywhere")
    for scope, declaration in sorted(levels.items()):
        typer.echo(f"{scope}: {declaration.get('level')} since {declaration.get('at')} ({declaration.get('reason')})")


def break_glass(
    stream: Annotated[str, typer.Argument(help="the stream to take access to")],
    purpose: Annotated[str, typer.Option(help="a template's purpose for that stream")],
    justification: Annotated[str, typer.Option(help="why now; reviewed after the fact")],
    acting_as: ActingAs = None,
) -> None:
    """In a declared emergency, take a template's access now; a review dispute opens at once."""
    body = {"stream": stream, "purpose": purpose, "justification": justification}
    dispute = call("POST", "/break-glass", parse_actor(acting_as), body)
    typer.echo(f"break-glass access to {stream} taken; review dispute {dispute['id']}, "
               f"deadline {dispute['deadline']}")


@webhook_cli.command("set")
def webhook_set(url: Annotated[str, typer.Argument(help="http(s) URL notifications are POSTed to")],
                acting_as: ActingAs = None) -> None:
    """Register the acting body's webhook for dispute and emergency notifications."""
    answer = call("PUT", "/webhooks", parse_actor(acting_as), {"url": url})
    typer.echo(f"webhook for {answer['body']}: {answer['url']}")
    if answer.get("secret"):
        typer.echo(f"signing secret (shown once; keep it secret, verify {answer['signature']['header']} with it): "
                   f"{answer['secret']}")
