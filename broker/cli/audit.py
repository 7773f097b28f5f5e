"""`accord audit export|verify`: the signed audit trail as JSON lines, and checking it against the audit public key
and the newest anchor of its checkpoints on the governance log.

`export` asks the audit chainer (in the governance service, which alone holds the signing key) to sign the chain
at once, and writes the chain up to that checkpoint, so every export ends signed. `verify` prints how many entries
and checkpoints it read and which anchor it checked against, then `ok` or the first problem, and exits 1 on a
problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from broker.cli.context import current_settings
from broker.domain.audit import Anchor, Entry, from_json_line, key_id, verify
from broker.domain.topics import CHAIN_TOPIC, GOVERNANCE_TOPIC
from broker.errors import AccordError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from broker.adapters.kafka_access import KafkaAccess
    from broker.domain.receipt_ledger import ReceiptKey

audit_cli = typer.Typer(help="The tamper-evident audit trail: export it, verify it, list delivery receipts.",
                        no_args_is_help=True)

ChainTopic = Annotated[str, typer.Option("--topic", help="the chain topic")]
GovernanceTopic = Annotated[str, typer.Option(help="where the chain's checkpoints are anchored")]


def cli_kafka() -> KafkaAccess:
    from broker.cli.policy import running_endpoints
    from broker.security.kafka_identities import kafka_access

    settings = current_settings()
    # Only Kafka is needed: a Kafka named by ACCORD_KAFKA_BOOTSTRAP will do without the other services.
    return kafka_access(settings, settings.kafka_bootstrap) if settings.kafka_bootstrap else running_endpoints().kafka


def chain_lines(topic: str) -> Iterator[str]:
    from broker.adapters.kafka_audit import read_chain

    return read_chain(cli_kafka(), topic)


def _sealed_lines(topic: str, governance_topic: str, wait_s: float) -> Iterator[str]:
    from broker.adapters.kafka_audit import read_sealed_chain

    return read_sealed_chain(cli_kafka(), topic, governance_topic, wait_s)


@audit_cli.command("export")
def export(
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of standard output")] = None,
    topic: ChainTopic = CHAIN_TOPIC,
    seal: Annotated[bool, typer.Option(help="have the governance service sign the chain first, so the export ends "
                                            "with a checkpoint over its last entry (--no-seal: export the chain "
                                            "as it stands, when that service is down)")] = True,
    wait: Annotated[float, typer.Option(help="seconds to wait for the signature and its anchor")] = 30.0,
    governance_topic: GovernanceTopic = GOVERNANCE_TOPIC,
) -> None:
    """Write the chain topic's entries as JSON lines, oldest first, ending with a freshly signed checkpoint."""
    lines = _sealed_lines(topic, governance_topic, wait) if seal else chain_lines(topic)
    try:
        if out is None:
            for line in lines:
                typer.echo(line)
            return
        count = _write(out, lines)
    except AccordError as exc:
        typer.echo(f"problem: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{count} entries written to {out}", err=True)


def _write(out: Path, lines: Iterable[str]) -> int:
    # Written beside and renamed, so a failed export never leaves a file that looks like a (short) trail.
    partial = out.with_name(f".{out.name}.partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as file:
            for line in lines:
                file.write(line + "\n")
                count += 1
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return count


@audit_cli.command("verify")
def verify_trail(
    file: Annotated[Path | None, typer.Argument(help="an exported trail (default: read the chain topic)")] = None,
    key: Annotated[Path | None, typer.Option(help="the audit public key PEM (default: the secrets directory's "
                                                  "audit-signing.pub)")] = None,
    require_signed_tail: Annotated[bool, typer.Option(help="fail if entries follow the last checkpoint (every "
                                                           "export ends signed)")] = False,
    topic: Annotated[str, typer.Option("--topic", help="the chain topic (for a FILE: the one it was exported from, "
                                                       "whose anchors apply)")] = CHAIN_TOPIC,
    governance_topic: GovernanceTopic = GOVERNANCE_TOPIC,
    offline: Annotated[bool, typer.Option(help="do not read the newest anchor from Kafka: a trail cut exactly at "
                                               "a checkpoint then passes")] = False,
) -> None:
    """Check every hash, link and checkpoint signature, and that the trail reaches the newest anchored checkpoint;
    name the first entry that is wrong."""
    from broker.security.audit_keys import load_public_key, public_key_path

    if offline and file is None:
        raise typer.BadParameter("--offline needs an exported FILE")
    public = load_public_key(key or public_key_path(current_settings().secrets_dir))
    try:
        entries = list(_parse(_file_lines(file) if file is not None else chain_lines(topic)))
        anchor = None if offline else _newest_anchor(topic, governance_topic)
    except AccordError as exc:
        typer.echo(f"problem: {exc}")
        raise typer.Exit(1) from None
    report = verify(entries, {key_id(public): public}, require_checkpoint_tail=require_signed_tail, anchor=anchor)
    typer.echo(f"{report.entries} entries, {report.checkpoints} checkpoints, "
               f"{report.unsigned_tail} after the last checkpoint")
    typer.echo(_anchor_line(anchor, offline, governance_topic))
    if report.first_problem is None:
        typer.echo("ok")
        return
    problem = report.first_problem
    typer.echo(f"problem at entry {problem.seq} ({problem.kind}): {problem.message}")
    raise typer.Exit(1)


def _newest_anchor(topic: str, governance_topic: str) -> Anchor | None:
    from broker.adapters.kafka_audit import newest_anchor

    return newest_anchor(cli_kafka(), topic, governance_topic)


def _anchor_line(anchor: Anchor | None, offline: bool, governance_topic: str) -> str:
    if offline:
        return "anchor: not checked (--offline)"
    if anchor is None:
        return f"anchor: none for this chain on {governance_topic}"
    return f"anchor: checkpoint {anchor.seq} on {governance_topic}"


def _file_lines(path: Path) -> Iterator[str]:
    # Iterating (not splitlines) splits only at newlines; U+2028 may appear unescaped inside strings.
    with path.open(encoding="utf-8") as file:
        yield from (line.rstrip("\n") for line in file)


def _parse(lines: Iterable[str]) -> Iterator[Entry]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield from_json_line(line, number)


@audit_cli.command("receipts")
def receipts(
    body: Annotated[str, typer.Option(help="the subscribing body")],
    file: Annotated[Path | None, typer.Argument(help="an exported trail (default: read the chain topic)")] = None,
    key: Annotated[list[Path] | None, typer.Option(help="a receipt public key PEM of the body to verify with, "
                                                        "repeatable (default: the keys registered on the trail)")]
    = None,
    topic: ChainTopic = CHAIN_TOPIC,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per topic-partition")] = False,
) -> None:
    """Per delivery topic-partition of the body: the offsets delivered and not yet acknowledged, and the
    acknowledged ranges with their key ids, each receipt verified with the body's public key. Exit 1 if a receipt
    does not verify."""
    import json

    from broker.domain.receipt_ledger import ledger, report
    from broker.domain.topics import DELIVER_PREFIX

    try:
        found = ledger(_parse(_file_lines(file) if file is not None else chain_lines(topic)))
        public = _receipt_keys(body, key, found.keys)
    except AccordError as exc:
        typer.echo(f"problem: {exc}")
        raise typer.Exit(1) from None
    mine = [r for r in found.receipts if r.get("body") == body]
    bad = [r for r in mine if not _verifies(r, public)]
    for part in report(found.batches, [r for r in mine if r not in bad], f"{DELIVER_PREFIX}{body}."):
        if as_json:
            typer.echo(json.dumps(part.to_json(), sort_keys=True))
            continue
        typer.echo(f"{part.topic} [{part.partition}]")
        typer.echo(f"  not yet acknowledged: {_runs(part.unacknowledged) or 'none'}")
        for (first, last), ident in part.acknowledged:
            typer.echo(f"  acknowledged {first}-{last} with key {ident} (signature verified)")
    for receipt in bad:
        typer.echo(f"problem: the receipt for {receipt.get('topic')} [{receipt.get('partition')}] "
                   f"{receipt.get('first_offset')}-{receipt.get('last_offset')} (key {receipt.get('key_id')}) does not "
                   f"verify with {body}'s public key", err=True)
    if bad:
        raise typer.Exit(1)


def _runs(runs: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def _receipt_keys(body: str, files: list[Path] | None, registered: Mapping[str, ReceiptKey]
                  ) -> dict[str, Ed25519PublicKey]:
    from broker.domain.receipts import fingerprint, parse_public_key

    if not files:
        return {k.key_id: parse_public_key(k.public_key) for k in registered.values() if k.body == body}
    keys = {}
    for path in files:
        try:
            key = parse_public_key(path.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise AccordError(f"cannot read the public key {path}: {exc}") from exc
        keys[fingerprint(key)] = key
    return keys


def _verifies(receipt: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> bool:
    from broker.domain.receipt_ledger import receipt_verifies

    key = keys.get(str(receipt.get("key_id")))
    return key is not None and receipt_verifies(receipt, key)
