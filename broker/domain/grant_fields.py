"""The fields a grant gives (a dispute decision, break-glass, an approved access request): each as it is, masked,
generalised or pseudonymised, checked against the field's kind and tags in the applied catalog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.errors import GovernanceError

KEEP, MASK, PSEUDONYMISE, GENERALISE = "keep", "mask", "pseudonymise", "generalise"
AGE_BAND, POSTCODE_DISTRICT, LSOA = "age-band", "postcode-district", "lsoa"
LSOA_TAG = "geography:lsoa"
GRANTABLE = (KEEP, MASK, PSEUDONYMISE, GENERALISE)  # never drop: a field not granted is simply not named


@dataclass(frozen=True)
class FieldGrant:
    """How one granted field is delivered: `transform`, its `method` (generalise only) and parameters
    (`keep_last` for mask, `at` for an age band)."""

    transform: str = KEEP
    method: str | None = None
    keep_last: int | None = None
    at: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> FieldGrant:
        unknown = sorted(set(doc) - {"transform", "method", "keep_last", "at"})
        if unknown:
            raise GovernanceError(f"{where}: unknown key(s) {', '.join(unknown)}; a field is granted with transform, "
                                  "method, keep_last or at")
        keep_last = doc.get("keep_last")
        if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 0):
            raise GovernanceError(f"{where}: keep_last must be a whole number of characters, not {keep_last!r}")
        method, at = doc.get("method"), doc.get("at")
        return cls(transform=str(doc.get("transform", KEEP)), method=None if method is None else str(method),
                   keep_last=keep_last, at=None if at is None else str(at))

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in (("transform", self.transform), ("method", self.method),
                                              ("keep_last", self.keep_last), ("at", self.at)) if value is not None}


def field_specs(stream_id: str, stream: Mapping[str, Any], names: Sequence[str],
                transforms: Mapping[str, FieldGrant]) -> dict[str, dict[str, Any]]:
    """The contract's field specs (`{transform, method, as, params}`, as the catalog compiles a tier's) for the
    granted `names`; a name without an entry in `transforms` is kept as it is. GovernanceError names the field
    and why when a transform does not fit it."""
    fields: Mapping[str, Mapping[str, Any]] = stream.get("fields") or {}
    if stray := sorted(set(transforms) - set(names)):
        raise GovernanceError(f"transforms name field(s) {', '.join(stray)} that are not granted; a transform "
                              "applies to a granted field")
    specs = {name: _spec(stream_id, fields, name, transforms.get(name, FieldGrant())) for name in sorted(names)}
    delivered: dict[str, str] = {}
    for name, spec in specs.items():
        if (other := delivered.setdefault(spec["as"] or name, name)) != name:
            raise GovernanceError(f"{stream_id} fields {other!r} and {name!r} would both be delivered as "
                                  f"{spec['as'] or name!r}; grant one of them another way")
    return specs


def _spec(stream_id: str, fields: Mapping[str, Mapping[str, Any]], name: str, grant: FieldGrant) -> dict[str, Any]:
    where = f"{stream_id} field {name!r}"
    if grant.transform not in GRANTABLE:
        raise GovernanceError(f"{where}: transform {grant.transform!r} is not one of {', '.join(GRANTABLE)}")
    if (grant.transform == GENERALISE) != (grant.method is not None):
        raise GovernanceError(f"{where}: generalise needs a method ({AGE_BAND}, {POSTCODE_DISTRICT} or {LSOA}) "
                              "and no other transform takes one")
    if grant.keep_last is not None and grant.transform != MASK:
        raise GovernanceError(f"{where}: keep_last only applies to mask")
    if grant.at is not None and grant.method != AGE_BAND:
        raise GovernanceError(f"{where}: `at` only applies to an age band")
    params: dict[str, str] = {}
    if grant.transform == MASK:
        params["keep_last"] = str(grant.keep_last or 0)
    if grant.transform == GENERALISE:
        params.update(_method_params(where, fields, name, grant))
    # A kept field keeps its name (`as` null, as grants always said); a generalised one is named after its method,
    # as the catalog names it, so a grant and an agreement deliver dob's age band as the same field.
    delivered = grant.method.replace("-", "_") if grant.method else None
    return {"transform": grant.transform, "method": grant.method, "as": delivered, "params": params}


def _method_params(where: str, fields: Mapping[str, Mapping[str, Any]], name: str,
                   grant: FieldGrant) -> dict[str, str]:
    kind = _kind(fields, name)
    if grant.method == AGE_BAND:
        if kind != "date":
            raise GovernanceError(f"{where}: an age band is made from a date, and {name} is {kind}")
        if grant.at is not None and _kind(fields, grant.at) != "date":
            dates = ", ".join(n for n in fields if _kind(fields, n) == "date")
            raise GovernanceError(f"{where}: `at` must name a date field ({dates}), not {grant.at!r}")
        return {} if grant.at is None else {"at": grant.at}
    if grant.method == POSTCODE_DISTRICT:
        if kind != "string":
            raise GovernanceError(f"{where}: a postcode district is cut from a postcode string, and {name} is {kind}")
        return {}
    if grant.method == LSOA:
        tagged = [n for n, f in fields.items() if LSOA_TAG in (f.get("tags") or ())]
        if len(tagged) != 1:
            raise GovernanceError(f"{where}: generalising to the LSOA needs one field tagged {LSOA_TAG}; "
                                  f"the stream has {len(tagged)}")
        return {"from": tagged[0]}
    raise GovernanceError(f"{where}: unknown generalise method {grant.method!r}; use {AGE_BAND}, "
                          f"{POSTCODE_DISTRICT} or {LSOA}")


def _kind(fields: Mapping[str, Mapping[str, Any]], name: str) -> str:
    if name not in fields:
        return "not a field"
    return str(fields[name].get("kind") or "of unknown type (re-apply the catalog)")
