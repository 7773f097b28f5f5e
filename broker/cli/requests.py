"""`accord request create|list|show|approve|refuse`: access requests over the governance API, acting as a person.

The token (`--token TOKEN`, `--token @FILE` or ACCORD_TOKEN) names the body and role asking, or the reviewer;
errors the API returns are printed as `error: <message>` with exit status 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from broker.cli.governance import SHOWN, AsJson, _echo_json, _who, call, parse_actor
from broker.cli.policy import ActingAs

request_cli = typer.Typer(help="Access requests: ask for a stream from a template; reviewers approve or refuse.",
                          no_args_is_help=True)

RequestId = Annotated[str, typer.Argument(metavar="REQUEST", help="request id, e.g. r-0123456789")]
Reason = Annotated[str, typer.Option(help="why (recorded, audited and shown to the requester)")]


@request_cli.command("create")
def request_create(
    template: Annotated[str, typer.Argument(help="the agreement template, e.g. t1-positive-tests")],
    purpose: Annotated[str, typer.Option(help="the template's purpose, e.g. health-protection")],
    justification: Annotated[str, typer.Option(help="why the data is needed")],
    field: Annotated[list[str], typer.Option("--field", help="a stream field needed, repeatable")],
    duration: Annotated[str, typer.Option(help="how long, ISO 8601 (e.g. P30D)")] = "P30D",
    legal_basis: Annotated[list[str] | None, typer.Option(
        "--legal-basis", help="a gateway of the template relied on, repeatable (default: all of them)")] = None,
    area: Annotated[list[str] | None, typer.Option(
        "--area", help="an LA code wanted, repeatable (default: all the body serves)")] = None,
    backfill: Annotated[str | None, typer.Option(help="history wanted, ISO 8601 (e.g. P28D)")] = None,
    acting_as: ActingAs = None,
    as_json: AsJson = False,
) -> None:
    """Ask for a stream from a template for the token's body and role; the publisher's reviewers are told."""
    body = {"template": template, "purpose": purpose, "justification": justification, "fields": field,
            "duration": duration, "legal_basis": legal_basis or [], "areas": area, "backfill": backfill}
    made = call("POST", "/requests", parse_actor(acting_as), body)
    if as_json:
        _echo_json(made)
        return
    typer.echo(f"made request {made['id']}: {made['state']} at tier {made['tier'] + 1}, deadline {made['deadline']}")


@request_cli.command("list")
def request_list(
    acting_as: ActingAs = None,
    state: Annotated[str | None, typer.Option(help="awaiting, approved, live, refused, defaulted or expired")] = None,
    as_json: AsJson = False,
) -> None:
    """Your body's requests and those you review, oldest first."""
    answer = call("GET", "/requests", parse_actor(acting_as), params=None if state is None else {"state": state})
    if as_json:
        _echo_json(answer)
        return
    for line in request_table(answer["requests"]):
        typer.echo(line)


def request_table(requests: Sequence[Mapping[str, Any]]) -> list[str]:
    if not requests:
        return ["no access requests"]
    lines = [f"{'ID':<14} {'STATE':<10} {'TIER':<4} {'BODY':<32} {'ROLE':<10} {'TEMPLATE':<26} DEADLINE"]
    for r in requests:
        lines.append(f"{r['id']:<14} {r['state']:<10} {r['tier'] + 1:<4} {r['body']:<32} {r['role']:<10} "
                     f"{r['template']:<26} {r.get('deadline') or '-'}")
    return lines


@request_cli.command("show")
def request_show(ident: RequestId, acting_as: ActingAs = None, as_json: AsJson = False) -> None:
    """One request: what was asked, who reviewed it, the decision, approval to first record, and its timeline."""
    request = call("GET", f"/requests/{ident}", parse_actor(acting_as))
    if as_json:
        _echo_json(request)
        return
    for line in request_lines(request):
        typer.echo(line)


def request_lines(request: Mapping[str, Any]) -> list[str]:
    lines = [
        f"request {request['id']}: {request['state']} (tier {request['tier'] + 1}, level {request['level']})",
        f"  by {_who(request['requester'])} for {request['template']} ({request['stream']} of {request['publisher']})",
        f"  purpose {request['purpose']}; legal basis {', '.join(request['legal_basis'])}",
        f"  fields {', '.join(request['fields'])}; areas {', '.join(request['areas'])}",
        f"  duration {request['duration']}; history wanted {request.get('backfill') or '-'}",
        f"  justification: {request['justification']}",
    ]
    if request.get("deadline"):
        lines.append(f"  deadline {request['deadline']}")
    if request.get("approved_at"):
        lines.append(f"  approved at {request['approved_at']}")
    seconds = request.get("approval_to_first_record_s")
    if seconds is not None:
        lines.append(f"  approval to first record delivered: {seconds:.3f} s")
    lines.append("  timeline:")
    for event in request.get("timeline", []):
        data = event.get("data") or {}
        shown = " ".join(f"{key}={data[key]}" for key in (*SHOWN, "verdict") if data.get(key) not in (None, [], ""))
        lines.append(f"    {event['at']}  {event['type']:<24} {_who(event.get('actor'))}  {shown}".rstrip())
    return lines


@request_cli.command("approve")
def request_approve(ident: RequestId, reason: Reason, acting_as: ActingAs = None) -> None:
    """Approve as one of the request's reviewers; at the quorum the agreement is made and put in force."""
    request = call("POST", f"/requests/{ident}/approvals", parse_actor(acting_as), {"reason": reason})
    typer.echo(f"request {request['id']}: {request['state']}")


@request_cli.command("refuse")
def request_refuse(ident: RequestId, reason: Reason, acting_as: ActingAs = None) -> None:
    """Refuse, with the reason the requester is shown."""
    request = call("POST", f"/requests/{ident}/refusal", parse_actor(acting_as), {"reason": reason})
    typer.echo(f"request {request['id']}: {request['state']}")
