"""The National Data Opt-out's pure rules: which legal bases it covers, NHS numbers, keyed hashes, loading a list."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli import app
from broker.domain.optout import (
    NO_NHS_NUMBER,
    OPTED_OUT,
    OptOutList,
    changes,
    check_digit,
    digest,
    is_digest,
    normalise,
    rule_for,
)
from broker.errors import ConfigError
from broker.services.optout import read_list, replace_list

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
VALID = "9434765919"          # NHS England's documented example number: check digit 9
ALSO_VALID = "4010232137"


def test_copi_regulation_3_and_individual_care_are_exempt_whatever_else_is_listed() -> None:
    t1 = rule_for(["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"], patient_level=True)
    assert not t1.applies and "COPI regulation 3" in t1.why and "6.2" in t1.why
    care = rule_for(["individual-care", "uk-gdpr-9-2-h"], patient_level=True)
    assert not care.applies and "individual" in care.why
    both = rule_for(["copi-reg-5-s251", "copi-reg-3-4"], patient_level=True)
    assert not both.applies, "an exemption wins: the disclosure rests on it"


def test_section_251_research_and_planning_is_covered() -> None:
    research = rule_for(["copi-reg-5-s251", "uk-gdpr-6-1-e", "uk-gdpr-9-2-h"], patient_level=True)
    assert research.applies and "section 251" in research.why and "5.1" in research.why


def test_patient_data_without_a_stated_exemption_is_covered() -> None:
    planning = rule_for(["uk-gdpr-6-1-e", "uk-gdpr-9-2-h"], patient_level=True)
    assert planning.applies and "no exemption" in planning.why


def test_aggregate_or_unnamed_data_is_outside_the_opt_out() -> None:
    assert not rule_for(["copi-reg-5-s251"], patient_level=False).applies
    assert not rule_for(["not-personal-data", "data-provision-notice"], patient_level=True).applies
    assert rule_for(["uk-gdpr-6-1-e"], patient_level=False).to_json()["applies"] is False


def test_nhs_numbers_are_checked_by_modulus_11_and_printed_forms_accepted() -> None:
    assert normalise("943 476 5919") == VALID == normalise("943-476-5919")
    assert normalise(ALSO_VALID) == ALSO_VALID
    with pytest.raises(ValueError, match="check digit"):
        normalise("9434765918")
    with pytest.raises(ValueError, match="10-digit"):
        normalise("94347659")
    assert check_digit("943476591") == 9
    assert check_digit("123456789") is None  # a remainder of 1 gives 10: no valid number starts so


def test_digests_are_keyed_and_never_the_number() -> None:
    d = digest(KEY, VALID)
    assert is_digest(d) and VALID not in d
    assert d == digest(KEY, VALID) != digest(OTHER_KEY, VALID)
    assert digest(KEY, ALSO_VALID) != d
    with pytest.raises(ValueError, match="16 bytes"):
        digest(b"short", VALID)


def test_the_list_withholds_opted_out_and_unnamed_rows_only() -> None:
    listed = OptOutList(KEY, [digest(KEY, VALID)])
    assert listed.withholds("943 476 5919") == OPTED_OUT
    assert listed.withholds(ALSO_VALID) is None
    assert listed.withholds(None) == NO_NHS_NUMBER
    assert listed.withholds("  ") == NO_NHS_NUMBER
    assert listed.withholds("not a number") == NO_NHS_NUMBER
    listed.update(digest(KEY, VALID), opted_out=False)   # the patient opted back in
    assert listed.withholds(VALID) is None and len(listed) == 0
    assert OptOutList(OTHER_KEY, [digest(KEY, VALID)]).withholds(VALID) is None, "another key matches nothing"


def test_replacing_the_list_adds_and_removes() -> None:
    assert changes(["a", "b"], ["b", "c"]) == (["c"], ["a"])


class MemoryLog:
    def __init__(self, digests: Iterable[str] = ()) -> None:
        self.digests = set(digests)
        self.writes: list[tuple[list[str], list[str]]] = []

    def current(self) -> set[str]:
        return set(self.digests)

    def write(self, add: Iterable[str], remove: Iterable[str]) -> None:
        added, removed = list(add), list(remove)
        self.writes.append((added, removed))
        self.digests = (self.digests | set(added)) - set(removed)


def test_loading_a_file_keeps_only_hashes_and_replaces_the_list(tmp_path: Path) -> None:
    listing = tmp_path / "optout.txt"
    listing.write_text(f"# opted out, export of the day\n{VALID}\n\n943 476 5919  # the same patient\n{ALSO_VALID}\n")
    log = MemoryLog([digest(KEY, "4505577104")])
    loaded = replace_list(log, read_list(listing, KEY))
    assert (loaded.listed, loaded.added, loaded.removed) == (2, 2, 1)
    assert log.digests == {digest(KEY, VALID), digest(KEY, ALSO_VALID)}
    assert all(VALID not in d and ALSO_VALID not in d for d in log.digests)


def test_a_bad_line_names_file_and_line_never_the_value(tmp_path: Path) -> None:
    listing = tmp_path / "optout.txt"
    listing.write_text(f"{VALID}\n1234567890\n")
    with pytest.raises(ConfigError) as failure:
        read_list(listing, KEY)
    assert f"{listing}:2: an NHS number whose check digit" in str(failure.value)
    assert "1234567890" not in str(failure.value) and "nothing was loaded" in str(failure.value)


def test_the_cli_refuses_a_bad_list_before_reaching_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCORD_STATE_DIR", str(tmp_path / "state"))
    listing = tmp_path / "optout.txt"
    listing.write_text(f"{VALID}\n12345\n")
    result = CliRunner().invoke(app, ["optout", "load", str(listing)])
    assert result.exit_code == 1
    assert f"{listing}:2: not a 10-digit NHS number" in result.stderr and "12345" not in result.stderr.replace(
        str(listing), "")
    key_file = next((tmp_path / "state").rglob("optout.key"))
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
