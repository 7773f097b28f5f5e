# METADATA
# title: Accord sharing decision
# description: |
#   Decides whether a subscriber (body + role) may receive a stream for a purpose at a time.
#   Default deny: access exists only under an agreement in data.accord.agreements that names
#   the subscriber, the role, the stream and the purpose, is in force at input.time, and whose
#   required emergency level is met by input.emergency_level.
package accord.sharing

default allow := false

# METADATA
# description: True when at least one agreement grants the request.
allow if count(granting_agreements) > 0

# METADATA
# description: Ids of the agreements that grant this request.
granting_agreements contains id if {
	some id, agreement in data.accord.agreements
	_covers(agreement, input)
}

# METADATA
# description: The decision returned to callers; reasons explain a refusal.
decision := {
	"allow": allow,
	"agreements": sort([id | some id in granting_agreements]),
	"reasons": sort([r | some r in reasons]),
}

# METADATA
# description: Why the request is refused; empty when it is allowed.
reasons contains "no agreement names this subscriber, role, stream and purpose" if {
	not allow
	count(_named_agreements) == 0
}

reasons contains sprintf("agreement %s is not in force at %s", [id, input.time]) if {
	not allow
	some id in _named_agreements
	not _in_force(data.accord.agreements[id], input.time)
}

reasons contains sprintf("agreement %s needs emergency level %s, current level is %s", [id, required, input.emergency_level]) if {
	not allow
	some id in _named_agreements
	required := data.accord.agreements[id].emergency_level_required
	not _level_met(required, input.emergency_level)
}

_named_agreements contains id if {
	some id, agreement in data.accord.agreements
	_names(agreement, input)
}

_names(agreement, request) if {
	agreement.subscriber == request.subscriber
	agreement.stream == request.stream
	agreement.purpose == request.purpose
	request.role in agreement.roles
}

_covers(agreement, request) if {
	_names(agreement, request)
	_in_force(agreement, request.time)
	_level_met(agreement.emergency_level_required, request.emergency_level)
}

_in_force(agreement, at) if {
	now := time.parse_rfc3339_ns(at)
	time.parse_rfc3339_ns(agreement.valid_from) <= now
	now < time.parse_rfc3339_ns(agreement.valid_until)
}

_levels := {"normal": 0, "enhanced": 1, "emergency": 2}

_level_met(required, current) if _levels[current] >= _levels[required]
