# METADATA
# title: Accord sharing plans
# description: |
#   Turns a request (subscriber, role, stream, purpose, time and the control-topic state) into a
#   sharing plan: which agreements grant it, which rows are admitted, which fields are delivered and how
#   they are transformed in which areas (scopes), and until when. Default deny; see docs/sharing-plans.md for the contract.
package accord.plans

# METADATA
# description: The sharing plan for input; refused plans deliver nothing and say why in reasons.
plan := {
	"allow": allow,
	"reasons": sort(_reasons),
	"agreements": sort(_granting),
	"subscriber": _request.subscriber,
	"role": _request.role,
	"stream": _request.stream,
	"purpose": _request.purpose,
	"fields": _fields,
	"scopes": _scopes,
	"row_filter": {
		"jurisdiction": object.get(_stream, "jurisdiction", []),
		"areas": sort(_areas),
		"required": sort(_required),
	},
	"expiry": _expiry,
	"opt_out": _opt_out,
	"revision": sprintf("%s/%d", [_or_default(object.get(_catalog, "revision", null), "none"), _request.state_revision]),
}

# METADATA
# description: True when at least one agreement or grant grants the request (the same as plan.allow).
default allow := false

allow if count(_granting) > 0

# METADATA
# description: |
#   Every {subscriber, role, purpose} that an agreement or grant of input.stream names, in force or not,
#   sorted and without duplicates; the gate asks for one plan per entry.
subscriptions := [{"subscriber": subscriber, "role": role, "purpose": purpose} |
	some [subscriber, role, purpose] in sort(_subscription_keys)
]

# Tuples, so the order is by subscriber, then role, then purpose (objects would sort by key name first).
_subscription_keys contains [agreement.subscriber, role, agreement.purpose] if {
	some agreement in _agreements
	agreement.stream == _request.stream
	some tier in agreement.tiers
	some role in tier.roles
}

# Missing and null inputs both take the documented defaults (Python callers send None).
_defaults := {
	"subscriber": null, "role": null, "stream": null, "purpose": null, "time": null,
	"emergency_level": "normal", "revoked": [], "grants": [], "state_revision": 0,
}

_request := object.union(_defaults, {key: value | some key, value in input; value != null})

default _catalog := {}

_catalog := data.accord.catalog

_stream := object.get(_catalog, ["streams", _request.stream], {})

_revoked := {id | some id in _request.revoked}

_now := time.parse_rfc3339_ns(_request.time) if is_string(_request.time)

# Candidates: the catalog's agreements, then grants by id. A grant cannot replace a signed agreement
# of the same id, and of several grants with one id the first wins, so the candidates never conflict.
_agreements[id] := agreement if some id, agreement in _catalog.agreements

_agreements[id] := grant if {
	some i, grant in _request.grants
	id := grant.id
	not _catalog.agreements[id]
	not _earlier_grant(id, i)
}

_earlier_grant(id, i) if {
	some j, other in _request.grants
	j < i
	other.id == id
}

# Agreements that name the subscriber, a tier for the role, the stream and the purpose.
_named contains id if {
	some id, agreement in _agreements
	agreement.subscriber == _request.subscriber
	agreement.stream == _request.stream
	agreement.purpose == _request.purpose
	some tier in agreement.tiers
	_request.role in tier.roles
}

_granting contains id if {
	some id in _named
	not id in _revoked
	_in_force(_agreements[id], _now)
	_level_met(_required_level(_agreements[id]), _request.emergency_level)
}

_in_force(agreement, now) if {
	time.parse_rfc3339_ns(agreement.valid_from) <= now
	now < time.parse_rfc3339_ns(agreement.valid_until)
}

_levels := {"normal": 0, "enhanced": 1, "emergency": 2}

_level_met(required, current) if _levels[current] >= _levels[required]

_required_level(agreement) := _or_default(object.get(agreement, "emergency_level_required", null), "normal")

_or_default(value, fallback) := fallback if value == null

_or_default(value, _) := value if value != null

# Reasons: only for refused requests, one per failed condition of each named agreement.
_reasons contains "no agreement names this subscriber, role, stream and purpose" if {
	not allow
	count(_named) == 0
}

_reasons contains "the request time is missing or not an RFC3339 time" if {
	not allow
	not _now
}

_reasons contains sprintf("agreement %s is revoked", [id]) if {
	not allow
	some id in _named
	id in _revoked
}

_reasons contains sprintf("agreement %s is not yet in force at %s (valid from %s)", [id, _request.time, from]) if {
	not allow
	some id in _named
	from := _agreements[id].valid_from
	_now < time.parse_rfc3339_ns(from)
}

_reasons contains sprintf("agreement %s expired at %s (request time %s)", [id, until, _request.time]) if {
	not allow
	some id in _named
	until := _agreements[id].valid_until
	time.parse_rfc3339_ns(until) <= _now
}

_reasons contains sprintf("agreement %s has no readable validity period", [id]) if {
	not allow
	some id in _named
	not _readable_period(_agreements[id])
}

_reasons contains sprintf("agreement %s needs emergency level %s (current %s)", [id, required, current]) if {
	not allow
	some id in _named
	required := _required_level(_agreements[id])
	current := _request.emergency_level
	not _level_met(required, current)
}

_readable_period(agreement) if {
	time.parse_rfc3339_ns(agreement.valid_from)
	time.parse_rfc3339_ns(agreement.valid_until)
}

# Fields and scopes. A field's treatment holds only for rows in the areas of the agreement that grants it: a
# district agreement that names identifiers never lends them to the rows of a county-wide agreement that does not.
# Agreements with the same areas always cover the same rows, so they form one scope whose fields take the most
# revealing offer among them (ties to the smallest agreement id, then the earliest tier); scopes left with the same
# fields then join, their areas united. The gate gives a row, field by field, the most revealing treatment among
# the scopes whose areas it lies in (ties to the earlier scope); a row in none of them is not delivered.
_revealing := {"keep": 4, "generalise": 3, "pseudonymise": 2, "mask": 1}

_offers contains [id, name, [0 - _revealing[spec.transform], id, i], spec] if {
	some id in _granting
	some i, tier in _agreements[id].tiers
	_request.role in tier.roles
	some name, spec in object.union(_unnamed_fields(tier), _named_fields(tier))
}

_areas_of(id) := sort({area | some area in _agreements[id].row_scope.areas})

_area_fields[areas] := {name: spec |
	some [by, name, _, _] in _offers
	_areas_of(by) == areas
	[_, spec] := min({[rank, offered] |
		some [other, offered_name, rank, offered] in _offers
		offered_name == name
		_areas_of(other) == areas
	})
} if {
	some id in _granting
	areas := _areas_of(id)
}

_scope_entries contains [ids, {"agreements": ids, "areas": sort(united), "fields": fields}] if {
	some fields in {fields | some _, fields in _area_fields}
	ids := sort([id | some id in _granting; _area_fields[_areas_of(id)] == fields])
	united := {area | some areas, same in _area_fields; same == fields; some area in areas}
}

# Ordered by their first agreement id.
_scopes := [scope | some [_, scope] in sort(_scope_entries)]

# The plan's `fields` sums the scopes up: each field's most revealing treatment in any of them, ties to the earlier
# scope, which is what a row inside every scope receives and the most the plan can reveal. It describes the plan
# (decisions, audit); the treatment of a row is always the scopes'.
_fields[name] := spec if {
	some scope in _scopes
	some name, _ in scope.fields
	[_, spec] := min({[[0 - _revealing[offered.transform], i], offered] |
		some i, other in _scopes
		offered := other.fields[name]
	})
}

# Named fields with a known transform other than drop (drop has no rank, so it is never delivered).
_named_fields(tier) := {name: spec |
	some name, field in tier.fields
	_revealing[field.transform]
	_method_known(field)
	spec := {
		"transform": field.transform,
		"method": _method(field),
		"as": _delivered_as(name, field),
		"params": _or_default(object.get(field, "params", null), {}),
	}
}

# other_fields "keep": the stream's unnamed fields, except direct identifiers, which must be named.
_unnamed_fields(tier) := {name: {"transform": "keep", "method": null, "as": name, "params": {}} |
	tier.other_fields == "keep"
	some name, field in object.get(_stream, "fields", {})
	not tier.fields[name]
	tags := object.get(field, "tags", [])
	not "direct-identifier" in tags
}

_method_known(field) if field.transform != "generalise"

_method_known(field) if is_string(field.method)

_method(field) := field.method if field.transform == "generalise"

else := null

_delivered_as(name, field) := field["as"] if is_string(object.get(field, "as", null))

else := replace(field.method, "-", "_") if field.transform == "generalise"

else := name

_areas contains area if {
	some id in _granting
	some area in _agreements[id].row_scope.areas
}

# A subscriber's quality rule: rows missing any of these fields are not delivered to it but quarantined,
# naming it. Several granting agreements only ever tighten the rule, never loosen it.
_required contains name if {
	some id in _granting
	some name in object.get(_agreements[id], "required_fields", [])
}

# The earliest valid_until by instant, not by string (offsets and fractions differ).
default _expiry := null

_expiry := until if {
	count(_granting) > 0
	[_, until] := min({[time.parse_rfc3339_ns(u), u] | some id in _granting; u := _agreements[id].valid_until})
}

# The National Data Opt-out: applied when any granting agreement's legal basis is one it covers (the catalog
# compiler decides per agreement, with the reason: broker/domain/optout.py). Withholding more is the safe side, so
# one covered agreement is enough. A grant (a dispute's decision, a break-glass) states no legal basis of its own:
# it decides nothing here, and the agreements it extends do.
_opt_out := {
	"applies": count(_opt_out_covered) > 0,
	"reasons": sort([sprintf("%s: %s", [id, rule.why]) |
		some id in _granting
		rule := _agreements[id].national_data_opt_out
	]),
}

_opt_out_covered contains id if {
	some id in _granting
	_agreements[id].national_data_opt_out.applies == true
}
