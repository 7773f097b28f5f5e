# METADATA
# title: Accord API authorisation
# description: |
#   Decides whether an authenticated caller (a body, one of its roles, a person) may call one endpoint of one of
#   Accord's services. Input: service, method, route (the template, never the raw path), params, query,
#   identity {body, role, person} and, for a dispute or a misroute, the resource attributes the service builds
#   from its governance state. Default deny; a refusal says why in reasons.
package accord.authz

# METADATA
# description: The answer the services read, allow and (when refused) why.
decision := {"allow": allow, "reasons": sort(reasons)}

default allow := false

# METADATA
# description: Accord's own services; they read everything and keep the registry, but decide nothing.
allow if {
	_service_identity
	_service_may
}

# METADATA
# description: A catalog body acting in one of its roles, within what that role may do on this endpoint.
allow if {
	_member
	_body_may
}

# METADATA
# description: |
#   Accord's operator (body accord, role operator: the team that runs Accord, not a member body) applies the
#   catalog (registering its streams' schemas), announces pseudonym key rotations and records drill reports, and may
#   do nothing else. The catalog says who every member is, so no member role may replace it, and the first catalog
#   must be applicable before any member exists.
allow if {
	_operator
	input.service == "governance"
	[input.method, input.route] in {["PUT", "/catalog"], ["POST", "/pseudonym-keys/rotate"], ["POST", "/drill-reports"]}
}

# METADATA
# description: |
#   Applying a catalog registers its streams' schemas first (`accord catalog apply`): the operator checks and
#   registers a stream's schema under its subject, compatibility enforced by the registry. Delivery subjects are
#   the gate's alone.
allow if {
	_operator
	input.service == "registry"
	[input.method, input.route] in _schema_registration
	not startswith(_params.subject, "deliver.")
}

_schema_registration := {
	["POST", "/subjects/{subject}/versions"],
	["POST", "/compatibility/subjects/{subject}/versions/{version}"],
}

# METADATA
# description: Why a request was refused; empty when it is allowed.
reasons contains why if {
	not allow
	some why in _refusals
}

reasons contains why if {
	not allow
	count(_refusals) == 0
	why := sprintf("%s as %s may not %s %s on the %s service", [_id.body, _id.role, input.method, input.route, input.service])
}

_id := input.identity

_catalog := data.accord.catalog

_params := object.get(input, "params", {})

_dispute := input.resource.dispute

_service_identity if {
	_id.body == "accord"
	_id.role == "service"
}

_member if _id.role in _catalog.bodies[_id.body].roles

_read if input.method == "GET"

_governance_roles contains role if {
	some declarer in _catalog.emergency_declarers
	some role in declarer.roles
}

_governance_roles contains role if {
	some tier in _catalog.ladder.tiers
	not tier.deciders.party
	some role in tier.deciders.roles
}

_declarer if {
	some declarer in _catalog.emergency_declarers
	declarer.body == _id.body
	_id.role in declarer.roles
}

_operator if {
	_id.body == "accord"
	_id.role == "operator"
}

_own(name) if startswith(name, concat("", [_id.body, "."]))

_own(name) if startswith(name, concat("", ["ingest.", _id.body, "."]))

# -- Accord's services ----------------------------------------------------------------------------------------------

_service_may if input.service == "registry"

_service_may if input.route == "/metrics"

_service_may if {
	_read
	not input.route in _delivery_routes
}

# -- the governance service -----------------------------------------------------------------------------------------

# Listing disputes is open, but the service shows other members only each dispute's outcome; one dispute in full
# (purpose, justification, comments) only to its parties, its deciders at any tier and auditors.
_open_reads := {"/disputes", "/emergency", "/misroutes", "/misroutes/{ident}", "/receipt-keys", "/reviews"}

_by_any_member := {
	["POST", "/disputes"],
	["POST", "/requests"],
	["GET", "/requests"],
	["POST", "/misroutes"],
	["PUT", "/webhooks"],
	["POST", "/receipt-keys"],
	["POST", "/reviews/{task}/completion"], # who may complete which review: broker/domain/agreement_notices.py
}

_body_may if {
	input.service == "governance"
	_read
	input.route in _open_reads
}

_body_may if {
	input.service == "governance"
	[input.method, input.route] in _by_any_member
}

_body_may if {
	input.service == "governance"
	_read
	input.route == "/disputes/{ident}"
	_reads_in_full
}

_body_may if {
	input.route == "/webhooks/deliveries"
	input.query.body == _id.body
}

_body_may if {
	input.route == "/webhooks/deliveries"
	_id.role in _governance_roles
}

_body_may if {
	input.method == "POST"
	input.route == "/disputes/{ident}/comments"
	_involved
}

_body_may if {
	input.method == "POST"
	input.route == "/disputes/{ident}/appeal"
	_id.body in _dispute.parties
}

_body_may if {
	input.method == "POST"
	input.route in {"/disputes/{ident}/decision", "/disputes/{ident}/approvals"}
	_decider
	not _own_dispute
}

_body_may if {
	input.method == "POST"
	input.route in {"/emergency", "/emergency/lift"}
	_declarer
}

_body_may if {
	input.method == "POST"
	input.route == "/break-glass"
	_id.role in _catalog.ladder.break_glass.roles
}

_body_may if {
	input.method == "POST"
	input.route == "/misroutes/{ident}/deletion"
	input.resource.misroute.recipient == _id.body
}

# A body retires only its own receipt keys (an unknown id is let through for the service to answer 404).
_body_may if {
	input.service == "governance"
	input.method == "POST"
	input.route == "/receipt-keys/{ident}/retire"
	input.resource.receipt_key.body in {_id.body, null}
}

_involved if _id.body in _dispute.parties

_reads_in_full if _id.body in _dispute.parties

_reads_in_full if {
	some tier in _dispute.ladder_deciders
	_id.body in tier.bodies
	_id.role in tier.roles
}

_reads_in_full if _id.role == "auditor"

_involved if _decider

_decider if {
	_id.body in _dispute.deciders.bodies
	_id.role in _dispute.deciders.roles
}

# The publisher reconsidering at its own tier is the one party that decides (as broker/domain/adjudication.py).
_reconsidering if {
	_dispute.deciders.party == "publisher"
	_id.body == _dispute.publisher
}

_own_dispute if {
	_id.body in _dispute.parties
	not _reconsidering
}

_own_dispute if _id.body == _dispute.challenger

# -- access requests ------------------------------------------------------------------------------------------------
# A body asks in its own name and role (the service takes both from the token). A request is seen by the body that
# made it and by the reviewers of every tier it has reached (the publisher's, then the ladder's); the list is
# filtered by visible_requests. Only the reviewers of its current tier review it, never the requesting body.

_request := input.resource.request

_request_reviews := {"/requests/{ident}/approvals", "/requests/{ident}/refusal"}

_body_may if {
	input.service == "governance"
	_read
	input.route == "/requests/{ident}"
	_sees_request(_request)
}

_body_may if {
	input.service == "governance"
	input.method == "POST"
	input.route in _request_reviews
	_reviews_now(_request)
}

_sees_request(request) if request.body == _id.body

_sees_request(request) if {
	some tier in request.reviewed_by
	_id.body in tier.bodies
	_id.role in tier.roles
}

_sees_request(_) if _id.role == "auditor"

_reviews_now(request) if {
	_id.body in request.reviewers.bodies
	_id.role in request.reviewers.roles
	_id.body != request.body
}

# METADATA
# description: |
#   The ids of input.requests (each {id, body, reviewers, reviewed_by}) the caller may see: its own body's and those
#   it reviews at a tier they have reached. The governance service filters GET /requests by it.
visible_requests := [request.id |
	some request in input.requests
	_lists_request(request)
]

_lists_request(_) if _service_identity

_lists_request(request) if {
	_member
	_sees_request(request)
}

# -- control changes: revoking and reinstating an agreement ---------------------------------------------------------

_agreement_routes := {"/agreements/{ident}/revoke", "/agreements/{ident}/reinstate"}

_body_may if {
	input.service == "governance"
	input.method == "POST"
	input.route in _agreement_routes
	_may_revoke
}

# The IG lead of the body that publishes the agreement's stream.
_may_revoke if {
	_id.body == input.resource.agreement.publisher
	_id.role == "ig-lead"
}

# A decider of a ladder tier that is no party's own: the governance board, the emergency arbiter.
_may_revoke if {
	some tier in _catalog.ladder.tiers
	object.get(tier.deciders, "party", null) == null
	_id.body in tier.deciders.bodies
	_id.role in tier.deciders.roles
}

# -- the ingest API: a publisher's own streams ----------------------------------------------------------------------

_body_may if {
	input.service == "api"
	input.route in {"/streams/{stream}/records", "/streams/{stream}/quarantine"}
	_own(_params.stream)
}

# -- the pull API: a subscriber's own deliveries ---------------------------------------------------------------------
# Any body in one of its roles may ask: the service reads only `deliver.<body>.<role>.<stream>` for the caller's
# verified body and role, and refuses (403, with the reason) a right that is not in force. Accord's own service
# identity has no deliveries, so it is not let in here.

_delivery_routes := {"/deliveries/{stream}", "/deliveries/{stream}/events", "/deliveries/{stream}/receipts"}

_body_may if {
	input.service == "api"
	_read
	input.route in _delivery_routes
}

# A receipt acknowledges the caller's own delivery topic only; the service checks the topic it names is
# `deliver.<body>.<role>.<stream>` for the caller's verified body and role.
_body_may if {
	input.service == "api"
	input.method == "POST"
	input.route == "/deliveries/{stream}/receipts"
}

# -- the console: its pages for any member in any of its roles ------------------------------------------------------
# What a page shows is the member's own (its deliveries through the pull API, the disputes the governance API lets it
# read in full); a dispute form the console posts is decided again by the governance API, as this policy says there.

_console_pages := {
	"/", "/catalogue", "/my-data", "/my-data/{stream}", "/my-data/{stream}/records.csv",
	"/disputes", "/disputes/{ident}", "/audit",
	"/requests", "/requests/new", "/requests/{ident}",
}

_console_forms := {
	"/sign-out", "/disputes/{ident}/decision", "/disputes/{ident}/comments", "/disputes/{ident}/appeal",
	"/requests", "/requests/{ident}/approvals", "/requests/{ident}/refusal",
}

_body_may if {
	input.service == "console"
	_read
	input.route in _console_pages
}

_body_may if {
	input.service == "console"
	input.method == "POST"
	input.route in _console_forms
}

# The Emergency page for any member; its declare and lift forms for a declarer, break-glass for the ladder's roles
# (the governance API decides each again). The Publisher page for any member (it lists the body's own streams); one
# stream's quarantined rows for its owner only. "Why was this row not delivered?" for any member: the page answers
# for the member's own subscription to the stream only.
_console_emergency_pages := {"/emergency", "/publisher", "/my-data/{stream}/why-not"}

_body_may if {
	input.service == "console"
	_read
	input.route in _console_emergency_pages
}

_body_may if {
	input.service == "console"
	_read
	input.route == "/publisher/{stream}"
	_own(_params.stream)
}

_body_may if {
	input.service == "console"
	input.method == "POST"
	input.route in {"/emergency/declare", "/emergency/lift"}
	_declarer
}

_body_may if {
	input.service == "console"
	input.method == "POST"
	input.route == "/emergency/break-glass"
	_id.role in _catalog.ladder.break_glass.roles
}

# The audit trail's search and export: IG leads, the governance board, the arbiter and auditors, and Accord's
# operator (who has no other console page).
_console_audit_routes := {"/audit/search", "/audit/export.jsonl"}

_audit_roles := {"ig-lead", "governance-board", "arbiter", "auditor"}

_body_may if {
	input.service == "console"
	_read
	input.route in _console_audit_routes
	_id.role in _audit_roles
}

allow if {
	_operator
	input.service == "console"
	_read
	input.route in _console_audit_routes
}

# -- the schema registry: a body sees the subjects of streams it publishes or receives; a publisher writes its own ---

# METADATA
# description: |
#   Which of input.subjects the caller may see in the registry, in their order: every one for Accord's services;
#   for a body, its deliveries, what it publishes, the streams of its agreements and of the templates. The registry
#   filters its lists (GET /subjects, a schema's subjects and versions) by it.
visible_subjects := [subject |
	some subject in input.subjects
	_visible(subject)
]

_visible(_) if _service_identity

_visible(subject) if {
	_member
	_body_sees(subject)
}

# Its own deliveries: deliver.<body>.<role>.<stream>-value.
_body_sees(subject) if startswith(subject, concat("", ["deliver.", _id.body, "."]))

# What it publishes (and may write): ingest.<body>.<name>-value, or any subject named after its streams.
_body_sees(subject) if _own(subject)

_body_sees(subject) if {
	some stream in _catalog.streams
	stream.owner == _id.body
	stream.subject == subject
}

# The streams it has an agreement for (in force or not), and every template's stream: templates are published so
# that a body can prepare for a flow before it is switched on.
_body_sees(subject) if {
	some agreement in _catalog.agreements
	agreement.subscriber == _id.body
	_catalog.streams[agreement.stream].subject == subject
}

_body_sees(subject) if {
	some template in _catalog.templates
	_catalog.streams[template.stream].subject == subject
}

_registry_reads := {"/subjects/{subject}", "/compatibility/subjects/{subject}/versions/{version}"}

_registry_read if {
	input.service == "registry"
	_read
}

_registry_read if {
	input.service == "registry"
	input.method == "POST"
	input.route in _registry_reads
}

# Reads of no one subject or schema: the root, the global config and the list of subjects (filtered, see above).
_body_may if {
	_registry_read
	not _params.subject
	not _params.schema_id
}

_body_may if {
	_registry_read
	_visible(_params.subject)
}

# A schema by id: only if a subject the body sees uses it (the registry names the subjects in input.resource).
_body_may if {
	_registry_read
	_params.schema_id
	_schema_visible
}

_body_may if {
	input.service == "registry"
	not _read
	not input.route in _registry_reads
	_own(_params.subject)
}

# -- why not ------------------------------------------------------------------------------------------------------

_refusals contains why if {
	_service_identity
	input.route in _delivery_routes
	why := "Accord's service identity has no deliveries; a subscriber reads its own with its own token"
}

_refusals contains why if {
	not _service_identity
	not _member
	why := sprintf("%s holds no role %s in the applied catalog", [_id.body, _id.role])
}

_refusals contains why if {
	_member
	input.route in {"/disputes/{ident}/decision", "/disputes/{ident}/approvals"}
	not _decider
	why := sprintf(
		"dispute %s is at tier %d; %s as %s is not one of its deciders",
		[_dispute.id, _dispute.tier + 1, _id.body, _id.role],
	)
}

_refusals contains why if {
	_member
	input.route in {"/disputes/{ident}/decision", "/disputes/{ident}/approvals"}
	_decider
	_own_dispute
	why := sprintf("%s is a party to dispute %s and cannot decide it", [_id.body, _dispute.id])
}

_refusals contains why if {
	_member
	input.service == "governance"
	input.route == "/disputes/{ident}"
	not _reads_in_full
	why := sprintf(
		"dispute %s is read in full only by its parties, its deciders and auditors; GET /disputes shows %s its outcome",
		[_dispute.id, _id.body],
	)
}

_refusals contains why if {
	_member
	input.service == "governance"
	input.route == "/requests/{ident}"
	not _sees_request(_request)
	why := sprintf("request %s is seen only by %s, which made it, and its reviewers", [_request.id, _request.body])
}

_refusals contains why if {
	_member
	input.route in _request_reviews
	not _reviews_now(_request)
	why := sprintf(
		"request %s (by %s) is at tier %d, reviewed by %s of %s; %s as %s may not review it",
		[
			_request.id, _request.body, _request.tier + 1, concat(" or ", _request.reviewers.roles),
			concat(", ", _request.reviewers.bodies), _id.body, _id.role,
		],
	)
}

_refusals contains why if {
	_member
	input.route == "/receipt-keys/{ident}/retire"
	not input.resource.receipt_key.body in {_id.body, null}
	why := sprintf("receipt key %s belongs to %s; %s may retire only its own", [input.resource.receipt_key.id, input.resource.receipt_key.body, _id.body])
}

_refusals contains why if {
	_member
	input.route in {"/emergency", "/emergency/lift"}
	not _declarer
	why := sprintf("only an emergency declarer may change a level; %s as %s is not one", [_id.body, _id.role])
}

_refusals contains why if {
	_member
	input.service == "console"
	input.route in {"/emergency/declare", "/emergency/lift"}
	not _declarer
	why := sprintf("only an emergency declarer may change a level; %s as %s is not one", [_id.body, _id.role])
}

_refusals contains why if {
	_member
	input.service == "console"
	input.route == "/emergency/break-glass"
	not _id.role in _catalog.ladder.break_glass.roles
	why := sprintf("break-glass is for the roles %s; %s as %s is not one", [concat(", ", _catalog.ladder.break_glass.roles), _id.body, _id.role])
}

_refusals contains why if {
	_member
	input.service == "console"
	input.route == "/publisher/{stream}"
	not _own(_params.stream)
	why := sprintf("%s sees the quarantine of its own streams only, not %s", [_id.body, _params.stream])
}

_refusals contains why if {
	_member
	input.service == "console"
	input.route in _console_audit_routes
	not _id.role in _audit_roles
	why := sprintf("the audit trail is searched and exported by IG leads, the governance board, the arbiter and auditors; %s as %s may not", [_id.body, _id.role])
}

_refusals contains why if {
	_member
	input.route in _agreement_routes
	not _may_revoke
	why := sprintf(
		"only %s's IG lead, the governance board or the arbiter may revoke or reinstate agreement %s; %s as %s may not",
		[input.resource.agreement.publisher, input.resource.agreement.id, _id.body, _id.role],
	)
}

_refusals contains why if {
	_member
	input.route in {"/streams/{stream}/records", "/streams/{stream}/quarantine"}
	not _own(_params.stream)
	why := sprintf("%s may publish to and read the quarantine of its own streams only, not %s", [_id.body, _params.stream])
}

_refusals contains why if {
	_member
	input.service == "registry"
	not _read
	not input.route in _registry_reads
	not _own(object.get(_params, "subject", ""))
	why := sprintf("%s may change only its own subjects in the registry", [_id.body])
}

_refusals contains why if {
	_member
	_registry_read
	subject := _params.subject
	not _visible(subject)
	why := sprintf(
		"%s sees only the subjects of streams it publishes or receives, and the templates' streams; not %s",
		[_id.body, subject],
	)
}

_refusals contains why if {
	_member
	_registry_read
	schema_id := _params.schema_id
	not _schema_visible
	why := sprintf("%s sees a schema only if a subject it sees uses it; no such subject uses schema %s", [_id.body, schema_id])
}

_schema_visible if {
	some subject in input.resource.schema.subjects
	_visible(subject)
}
