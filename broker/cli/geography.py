"""`accord geography load|show`: make a newer ONS vintage the one rows are routed by, or show the one in force
(the catalog's geography/ directory, which ingest, the gate and `accord catalog` read)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from broker.cli.context import current_settings
from broker.domain.geography import COUNTRY_CODES, LaTable
from broker.domain.geography_files import (
    MANIFEST,
    build_la_table,
    geography_files,
    load_la_table,
    read_authority_rows,
    read_lsoas,
    read_successors,
    write_vintage,
)
from broker.errors import AccordError, ConfigError

geography_cli = typer.Typer(help="The ONS lookups (catalog/geography) that decide which council a row belongs to.",
                            no_args_is_help=True)
Into = Annotated[Path | None, typer.Option("--into", help="the geography directory (default: the catalog's, "
                                                          "ACCORD_CATALOG_DIR/geography)")]


@geography_cli.command("load")
def load(
    authorities: Annotated[Path, typer.Argument(help="ONS Ward (or LAD) to LAD to CTYUA/County to RGN to CTRY lookup")],
    lsoas: Annotated[Path, typer.Argument(help="ONS LSOA to LAD lookup (e.g. LSOA21CD, LAD24CD columns)")],
    vintage: Annotated[str, typer.Option(help="the ONS release, with its year, e.g. 'ONS May 2024'")],
    into: Into = None,
) -> None:
    """Check the two lookups (ONS's own CSVs, or Accord's columns) against each other and make them the vintage in
    force; nothing is written unless both pass. Codes the new vintage drops without a successor are listed."""
    into = into or current_settings().geography_dir
    previous = _previous(into)
    successors = geography_files(into).successors if (into / MANIFEST).is_file() else None
    rows = read_authority_rows(authorities)
    table = build_la_table(authorities, rows, vintage, read_successors(successors) if successors else ())
    lsoa_year, lsoa_rows = read_lsoas(lsoas, table)
    files = write_vintage(into, vintage, rows, lsoa_year, lsoa_rows, table, successors.name if successors else None)
    if previous is not None:
        for old in {previous[1], previous[2]} - {files.authorities, files.lsoas}:
            old.unlink(missing_ok=True)
            typer.echo(f"removed {old.name} ({previous[0].vintage})")
    england = sum(a.is_lower_tier and a.country_code == COUNTRY_CODES["England"] for a in table)
    typer.echo(f"{vintage}: {sum(a.is_lower_tier for a in table)} authorities ({england} in England), "
               f"{len(table) - sum(a.is_lower_tier for a in table)} counties, {len(lsoa_rows)} LSOAs; wrote "
               f"{files.authorities.name}, {files.lsoas.name} and {MANIFEST} in {into}")
    if previous is not None:
        for line in _dropped(previous[0], table):
            typer.echo(line)


@geography_cli.command("show")
def show(code: Annotated[str | None, typer.Argument(help="a GSS code to look up")] = None, into: Into = None) -> None:
    """The vintage in force and its counts, or what the table says of one code."""
    table = load_la_table(into or current_settings().geography_dir)
    if code is None:
        lower = [a for a in table if a.is_lower_tier]
        typer.echo(f"{table.vintage}: {len(lower)} authorities, {len(table) - len(lower)} counties")
        return
    authority = table.get(code)
    if authority is None:
        if not table.is_area(code):
            raise AccordError(table.why_unknown(code))
        typer.echo(f"{code} {table.name_of(code)}: {len(table.areas_served(code))} authorities")
        return
    typer.echo(f"{code} {authority.name}: {authority.tier.value}, upper tier {authority.upper_tier_code}, region "
               f"{authority.region_code} {table.name_of(authority.region_code)}, serves "
               f"{', '.join(sorted(table.areas_served(code)))}")


def _previous(directory: Path) -> tuple[LaTable, Path, Path] | None:
    try:
        files = geography_files(directory)
        return load_la_table(directory), files.authorities, files.lsoas
    except ConfigError:  # none yet, or broken: the new vintage replaces it all the same
        return None


def _dropped(old: LaTable, new: LaTable) -> list[str]:
    # ONS's lookups say what exists, not what replaced what: a reorganisation's successors are for people to add.
    gone = [a for a in old if not new.is_known(a.code) and new.retirement(a.code) is None]
    return [f"warning: {a.code} ({a.name}) of {old.vintage} is not in {new.vintage} and has no successor; add it to "
            "the successors table so that rows still naming it are told which code replaced it" for a in gone]
