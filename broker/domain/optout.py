"""The National Data Opt-out: which legal bases it covers, and the opted-out NHS numbers as keyed hashes only.

NHS England's National Data Opt-out Operational Policy Guidance Document (digital.nhs.uk/services/
national-data-opt-out/operational-policy-guidance-document) says when a patient's opt-out must be respected:
- it covers confidential patient information used for purposes beyond individual care (research and planning),
  in particular disclosures under section 251 support, COPI regulations 2 and 5 (section 5.1);
- it does not apply to data disclosed for the monitoring and control of communicable disease and other risks to
  public health, where regulation 3 of COPI 2002 lifts the duty of confidentiality (section 6.2), a COPI notice
  under regulation 3(4) included; nor to individual (direct) care, which is outside the opt-out altogether
  (section 2); nor to data that is not confidential patient information (anonymised or aggregate data).
Accord reads an agreement's legal bases that way: an exemption among them wins (the disclosure rests on it);
otherwise record-level patient data is covered, whether the basis is section 251 support or no exemption is stated
at all: a DPO would rather withhold a row than disclose one against a patient's recorded choice.

The list itself is never held in the clear: each NHS number is reduced to HMAC-SHA256 under the deployment's
opt-out key (the security secrets), so the list, the Kafka topic it travels on and the gate's memory hold digests
that nobody without the key can test a number against.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NHS_NUMBER_FIELD = "nhs_number"  # the field that names the patient in a stream's schema (T1, T3)
OPTED_OUT = "opted-out"          # a withheld row's reason: its patient has opted out
NO_NHS_NUMBER = "no-nhs-number"  # a withheld row's reason: it names no patient the opt-out could be checked for
COVERED_BASES: Mapping[str, str] = {
    "copi-reg-5-s251": "section 251 support (COPI regulations 2 and 5) for research or planning: the opt-out "
                       "applies (NDOP policy 5.1)",
}
EXEMPT_BASES: Mapping[str, str] = {
    "copi-reg-3-4": "COPI regulation 3 (communicable disease and risks to public health; a regulation 3(4) notice): "
                    "the opt-out does not apply (NDOP policy 6.2)",
    "individual-care": "individual (direct) care: the opt-out covers only purposes beyond individual care "
                       "(NDOP policy 2)",
}
NOT_PATIENT_DATA = "not-personal-data"
_DIGITS = re.compile(r"[0-9]{10}")
_WEIGHTS = range(10, 1, -1)  # the modulus 11 weights of the first nine digits


@dataclass(frozen=True)
class OptOutRule:
    """Whether the opt-out applies to an agreement's deliveries, and why (the compiled plan carries both)."""

    applies: bool
    why: str

    def to_json(self) -> dict[str, object]:
        return {"applies": self.applies, "why": self.why}


def rule_for(legal_bases: Iterable[str], patient_level: bool) -> OptOutRule:
    """The opt-out rule for a flow under `legal_bases`; `patient_level`: its stream names patients (an NHS number)."""
    bases = sorted(set(legal_bases))
    if not patient_level or NOT_PATIENT_DATA in bases:
        return OptOutRule(False, "not confidential patient information at record level (anonymised or aggregate, "
                                 "or no NHS number): outside the opt-out")
    exempt = [EXEMPT_BASES[b] for b in bases if b in EXEMPT_BASES]
    if exempt:
        return OptOutRule(False, "; ".join(exempt))
    covered = [COVERED_BASES[b] for b in bases if b in COVERED_BASES]
    if covered:
        return OptOutRule(True, "; ".join(covered))
    return OptOutRule(True, "no exemption among the legal bases (" + ", ".join(bases) + "): record-level patient "
                            "data used beyond individual care, so the opt-out applies (NDOP policy 5)")


def normalise(text: str) -> str:
    """A 10-digit NHS number from `text` (spaces and hyphens allowed, as printed: 943 476 5919); ValueError naming
    the fault, never the number, when it is not one (wrong length or a failed modulus 11 check digit)."""
    digits = text.replace(" ", "").replace("-", "")
    if not _DIGITS.fullmatch(digits):
        raise ValueError("not a 10-digit NHS number")
    if check_digit(digits[:9]) != int(digits[9]):
        raise ValueError("an NHS number whose check digit (modulus 11) is wrong")
    return digits


def check_digit(first_nine: str) -> int | None:
    """The modulus 11 check digit of an NHS number's first nine digits; None when no number can have them (10)."""
    if len(first_nine) != 9:
        raise ValueError("an NHS number's check digit is worked out from its first nine digits")
    total = sum(map(operator.mul, map(int, first_nine), _WEIGHTS))
    digit = 11 - total % 11
    if digit == 11:
        return 0
    return None if digit == 10 else digit


def digest(key: bytes, nhs_number: str) -> str:
    """The keyed hash the list holds for a (normalised) NHS number: hex HMAC-SHA256."""
    if len(key) < 16:
        raise ValueError("the opt-out key must be at least 16 bytes")
    return hmac.new(key, b"accord national data opt-out v1\x1f" + nhs_number.encode(), hashlib.sha256).hexdigest()


def is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class OptOutList:
    """The opted-out patients as digests; asks whether a record's NHS number is among them."""

    def __init__(self, key: bytes, digests: Iterable[str] = ()) -> None:
        self._key = key
        self._digests = set(digests)

    def __len__(self) -> int:
        return len(self._digests)

    def update(self, digest_hex: str, opted_out: bool) -> None:
        """One entry of the list's topic: a digest opted out, or (a tombstone) back in."""
        if opted_out:
            self._digests.add(digest_hex)
        else:
            self._digests.discard(digest_hex)

    def withholds(self, nhs_number: object) -> str | None:
        """Why a record naming `nhs_number` is withheld under a plan the opt-out applies to, or None to deliver it.

        A record without a usable NHS number is withheld too (NO_NHS_NUMBER): the opt-out cannot be checked for it,
        and under a covered plan a DPO expects no patient row to leave unchecked."""
        if nhs_number is None or not str(nhs_number).strip():
            return NO_NHS_NUMBER
        try:
            number = normalise(str(nhs_number))
        except ValueError:
            return NO_NHS_NUMBER
        return OPTED_OUT if digest(self._key, number) in self._digests else None


def changes(current: Iterable[str], wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """What replacing the list `current` with `wanted` writes: digests to add, digests to remove (tombstones)."""
    have, want = set(current), set(wanted)
    return sorted(want - have), sorted(have - want)
