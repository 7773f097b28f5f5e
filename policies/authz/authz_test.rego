package accord.authz_test

import data.accord.authz

_catalog := {
	"bodies": {
		"ukhsa": {"roles": ["ig-lead", "governance-board"]},
		"dhsc": {"roles": ["ig-lead", "governance-board"]},
		"nhse": {"roles": ["governance-board"]},
		"accord-arbiter": {"roles": ["arbiter"]},
		"leicester": {"roles": ["dph", "analyst"]},
		"blaby": {"roles": ["environmental-health"]},
		"ons": {"roles": ["auditor"]},
	},
	"emergency_declarers": [
		{"body": "dhsc", "roles": ["governance-board"]},
		{"body": "accord-arbiter", "roles": ["arbiter"]},
	],
	"ladder": {
		"tiers": [
			{"deciders": {"party": "publisher", "bodies": [], "roles": ["ig-lead"]}},
			{"deciders": {"bodies": ["ukhsa", "dhsc", "nhse"], "roles": ["governance-board"]}},
			{"deciders": {"bodies": ["accord-arbiter"], "roles": ["arbiter"]}},
		],
		"break_glass": {"roles": ["dph"]},
	},
	"streams": {
		"ukhsa.positive-tests": {"owner": "ukhsa", "subject": "ingest.ukhsa.positive-tests-value"},
		"ukhsa.isolation-notifications": {"owner": "ukhsa", "subject": "ingest.ukhsa.isolation-notifications-value"},
		"dhsc.care-home-capacity": {"owner": "dhsc", "subject": "dhsc-capacity"},
		"nhse.hospital-sitrep": {"owner": "nhse", "subject": "ingest.nhse.hospital-sitrep-value"},
	},
	"templates": {"t1": {"stream": "ukhsa.positive-tests"}},
	"agreements": {"t7-blaby": {"subscriber": "blaby", "stream": "ukhsa.isolation-notifications"}},
}

_who(body, role) := {"body": body, "role": role, "person": "someone"}

_call(service, method, route, who) := {
	"service": service, "method": method, "route": route, "path": route,
	"params": {}, "query": {}, "identity": who, "resource": {},
}

_dispute(tier) := {
	"id": "d-1", "publisher": "ukhsa", "subscriber": "blaby", "challenger": "blaby",
	"parties": ["blaby", "ukhsa"], "tier": tier, "deciders": _deciders[tier],
	"ladder_deciders": [
		{"bodies": ["ukhsa"], "roles": ["ig-lead"]},
		{"bodies": ["dhsc", "nhse", "ukhsa"], "roles": ["governance-board"]},
		{"bodies": ["accord-arbiter"], "roles": ["arbiter"]},
	],
}

_read_dispute(who) := object.union(
	_call("governance", "GET", "/disputes/{ident}", who),
	{"params": {"ident": "d-1"}, "resource": {"dispute": _dispute(0)}},
)

_deciders := [
	{"bodies": ["ukhsa"], "roles": ["ig-lead"], "party": "publisher"},
	{"bodies": ["dhsc", "nhse", "ukhsa"], "roles": ["governance-board"], "party": null},
]

_decide(who, tier) := object.union(
	_call("governance", "POST", "/disputes/{ident}/decision", who),
	{"params": {"ident": "d-1"}, "resource": {"dispute": _dispute(tier)}},
)

_allowed(request) if authz.decision.allow with input as request with data.accord.catalog as _catalog

_reasons(request) := reasons if {
	reasons := authz.decision.reasons with input as request with data.accord.catalog as _catalog
}

test_an_unknown_identity_is_refused_and_told_why if {
	request := _call("governance", "GET", "/disputes", _who("nobody", "dph"))
	not _allowed(request)
	_reasons(request) == ["nobody holds no role dph in the applied catalog"]
}

test_any_member_reads_disputes if _allowed(_call("governance", "GET", "/disputes", _who("leicester", "analyst")))

test_any_member_raises_a_dispute if _allowed(_call("governance", "POST", "/disputes", _who("blaby", "environmental-health")))

test_a_subscriber_cannot_decide if {
	request := _decide(_who("leicester", "dph"), 1)
	not _allowed(request)
	_reasons(request) == ["dispute d-1 is at tier 2; leicester as dph is not one of its deciders"]
}

test_a_board_member_decides_at_the_board_tier if _allowed(_decide(_who("dhsc", "governance-board"), 1))

test_a_decider_of_another_tier_is_refused if not _allowed(_decide(_who("dhsc", "governance-board"), 0))

test_a_party_never_decides_its_own_dispute if {
	request := _decide(_who("ukhsa", "governance-board"), 1)
	not _allowed(request)
	_reasons(request) == ["ukhsa is a party to dispute d-1 and cannot decide it"]
}

test_the_publisher_reconsiders_at_its_own_tier if _allowed(_decide(_who("ukhsa", "ig-lead"), 0))

test_the_challenger_never_decides if {
	request := json.patch(_decide(_who("ukhsa", "ig-lead"), 0), [
		{"op": "replace", "path": "/resource/dispute/challenger", "value": "ukhsa"},
	])
	not _allowed(request)
}

test_parties_appeal_and_comment_others_do_not if {
	appeal := object.union(_decide(_who("blaby", "environmental-health"), 0), {"route": "/disputes/{ident}/appeal"})
	_allowed(appeal)
	comment := object.union(_decide(_who("ukhsa", "ig-lead"), 0), {"route": "/disputes/{ident}/comments"})
	_allowed(comment)
	not _allowed(object.union(_decide(_who("leicester", "dph"), 0), {"route": "/disputes/{ident}/appeal"}))
}

test_only_declarers_change_the_emergency_level if {
	_allowed(_call("governance", "POST", "/emergency", _who("dhsc", "governance-board")))
	_allowed(_call("governance", "POST", "/emergency/lift", _who("accord-arbiter", "arbiter")))
	refused := _call("governance", "POST", "/emergency", _who("ukhsa", "ig-lead"))
	not _allowed(refused)
	_reasons(refused) == ["only an emergency declarer may change a level; ukhsa as ig-lead is not one"]
}

test_break_glass_is_for_its_roles if {
	_allowed(_call("governance", "POST", "/break-glass", _who("leicester", "dph")))
	not _allowed(_call("governance", "POST", "/break-glass", _who("leicester", "analyst")))
}

test_only_the_recipient_confirms_a_deletion if {
	request := object.union(
		_call("governance", "POST", "/misroutes/{ident}/deletion", _who("leicester", "dph")),
		{"resource": {"misroute": {"recipient": "leicester"}}},
	)
	_allowed(request)
	not _allowed(object.union(request, {"identity": _who("blaby", "environmental-health")}))
}

test_webhook_deliveries_are_a_bodys_own_or_governance if {
	own := object.union(
		_call("governance", "GET", "/webhooks/deliveries", _who("leicester", "dph")),
		{"query": {"body": "leicester"}},
	)
	_allowed(own)
	not _allowed(object.union(own, {"query": {"body": "ukhsa"}}))
	_allowed(object.union(own, {"identity": _who("nhse", "governance-board"), "query": {}}))
}

test_a_publisher_publishes_only_its_own_streams if {
	own := object.union(
		_call("api", "POST", "/streams/{stream}/records", _who("ukhsa", "ig-lead")),
		{"params": {"stream": "ukhsa.positive-tests"}},
	)
	_allowed(own)
	other := object.union(own, {"params": {"stream": "nhse.hospital-sitrep"}})
	not _allowed(other)
	_reasons(other) == ["ukhsa may publish to and read the quarantine of its own streams only, not nhse.hospital-sitrep"]
}

test_a_member_reads_deliveries_in_its_roles_and_nobody_else_does if {
	pull := object.union(
		_call("api", "GET", "/deliveries/{stream}", _who("leicester", "analyst")),
		{"params": {"stream": "ukhsa.positive-tests"}},
	)
	_allowed(pull)
	_allowed(object.union(pull, {"route": "/deliveries/{stream}/events"}))
	not _allowed(object.union(pull, {"method": "POST"}))
	stranger := object.union(pull, {"identity": _who("leicester", "ig-lead")})
	not _allowed(stranger)
	_reasons(stranger) == ["leicester holds no role ig-lead in the applied catalog"]
	service := object.union(pull, {"identity": _who("accord", "service")})
	not _allowed(service)
	_reasons(service) == ["Accord's service identity has no deliveries; a subscriber reads its own with its own token"]
}

test_the_registry_is_read_by_members_and_written_by_owners if {
	_allowed(_call("registry", "GET", "/subjects", _who("leicester", "analyst")))
	lookup := object.union(
		_call("registry", "POST", "/subjects/{subject}", _who("leicester", "analyst")),
		{"params": {"subject": "ingest.ukhsa.positive-tests-value"}},
	)
	_allowed(lookup)
	write := object.union(lookup, {"route": "/subjects/{subject}/versions"})
	not _allowed(write)
	_reasons(write) == ["leicester may change only its own subjects in the registry"]
	_allowed(object.union(write, {"identity": _who("ukhsa", "ig-lead")}))
	not _allowed(_call("registry", "PUT", "/config", _who("ukhsa", "ig-lead")))
}

test_services_keep_the_registry_and_scrape_metrics_but_decide_nothing if {
	service := _who("accord", "service")
	_allowed(_call("registry", "PUT", "/config", service))
	_allowed(_call("gate", "GET", "/metrics", service))
	_allowed(_call("governance", "GET", "/disputes", service))
	not _allowed(_decide(service, 1))
	not _allowed(_call("gate", "GET", "/metrics", _who("leicester", "dph")))
	_reasons(_call("gate", "GET", "/metrics", _who("leicester", "dph"))) == [
		"leicester as dph may not GET /metrics on the gate service",
	]
}

test_parties_deciders_of_any_tier_and_auditors_read_a_dispute_in_full if {
	_allowed(_read_dispute(_who("blaby", "environmental-health")))
	_allowed(_read_dispute(_who("ukhsa", "ig-lead")))
	_allowed(_read_dispute(_who("nhse", "governance-board")))
	_allowed(_read_dispute(_who("accord-arbiter", "arbiter")))
	_allowed(_read_dispute(_who("ons", "auditor")))
	_allowed(_read_dispute(_who("accord", "service")))
}

test_another_member_may_not_read_a_dispute_in_full_and_is_told_why if {
	request := _read_dispute(_who("leicester", "dph"))
	not _allowed(request)
	_reasons(request) == [
		"dispute d-1 is read in full only by its parties, its deciders and auditors; GET /disputes shows leicester its outcome",
	]
	not _allowed(_read_dispute(_who("dhsc", "ig-lead"))) # a board body, but not in a deciding role
	not _allowed(_read_dispute(_who("leicester", "auditor"))) # a role its body does not hold
}

_sees(who, subjects) := seen if {
	seen := authz.visible_subjects with input as {"identity": who, "subjects": subjects}
		with data.accord.catalog as _catalog
}

_every_subject := [
	"deliver.blaby.environmental-health.ukhsa.isolation-notifications-value",
	"deliver.leicester.dph.ukhsa.positive-tests-value",
	"deliver.leicester-west.dph.ukhsa.positive-tests-value",
	"dhsc-capacity",
	"ingest.nhse.hospital-sitrep-value",
	"ingest.ukhsa.isolation-notifications-value",
	"ingest.ukhsa.positive-tests-value",
	"someone-elses-test-value",
]

test_a_subscriber_sees_its_deliveries_its_agreements_and_the_templates_only if {
	_sees(_who("leicester", "analyst"), _every_subject) == [
		"deliver.leicester.dph.ukhsa.positive-tests-value",
		"ingest.ukhsa.positive-tests-value",
	]
	_sees(_who("blaby", "environmental-health"), _every_subject) == [
		"deliver.blaby.environmental-health.ukhsa.isolation-notifications-value",
		"ingest.ukhsa.isolation-notifications-value",
		"ingest.ukhsa.positive-tests-value",
	]
}

test_a_publisher_sees_its_own_streams_however_named if {
	_sees(_who("dhsc", "ig-lead"), _every_subject) == ["dhsc-capacity", "ingest.ukhsa.positive-tests-value"]
	_sees(_who("nhse", "governance-board"), _every_subject) == [
		"ingest.nhse.hospital-sitrep-value",
		"ingest.ukhsa.positive-tests-value",
	]
}

test_services_see_every_subject_and_strangers_none if {
	_sees(_who("accord", "service"), _every_subject) == _every_subject
	_sees(_who("nobody", "dph"), _every_subject) == []
	_sees(_who("leicester", "arbiter"), _every_subject) == []
}

_read_subject(who, subject) := object.union(
	_call("registry", "GET", "/subjects/{subject}/versions/{version}", who),
	{"params": {"subject": subject, "version": "latest"}},
)

test_a_body_reads_a_subject_only_if_it_sees_it if {
	_allowed(_read_subject(_who("leicester", "dph"), "deliver.leicester.dph.ukhsa.positive-tests-value"))
	other := _read_subject(_who("leicester", "dph"), "deliver.blaby.environmental-health.ukhsa.isolation-notifications-value")
	not _allowed(other)
	_reasons(other) == [concat("", [
		"leicester sees only the subjects of streams it publishes or receives, and the templates' streams; ",
		"not deliver.blaby.environmental-health.ukhsa.isolation-notifications-value",
	])]
	compatibility := object.union(other, {"method": "POST", "route": "/compatibility/subjects/{subject}/versions/{version}"})
	not _allowed(compatibility)
	_allowed(object.union(compatibility, {"identity": _who("accord", "service")}))
}

_by_id(who, subjects) := object.union(
	_call("registry", "GET", "/schemas/ids/{schema_id}", who),
	{"params": {"schema_id": "7"}, "resource": {"schema": {"subjects": subjects}}},
)

test_a_schema_by_id_only_through_a_subject_the_body_sees if {
	_allowed(_by_id(_who("leicester", "dph"), ["dhsc-capacity", "deliver.leicester.dph.ukhsa.positive-tests-value"]))
	refused := _by_id(_who("leicester", "dph"), ["dhsc-capacity"])
	not _allowed(refused)
	_reasons(refused) == ["leicester sees a schema only if a subject it sees uses it; no such subject uses schema 7"]
	not _allowed(_by_id(_who("leicester", "dph"), []))
	_allowed(_by_id(_who("accord", "service"), []))
}

test_the_global_config_and_the_list_are_open_to_members if {
	_allowed(_call("registry", "GET", "/config", _who("blaby", "environmental-health")))
	_allowed(_call("registry", "GET", "/", _who("blaby", "environmental-health")))
	not _allowed(_call("registry", "GET", "/subjects", _who("nobody", "dph")))
}

_agreement(who, route) := object.union(
	_call("governance", "POST", route, who),
	{
		"params": {"ident": "t1-leicester"},
		"resource": {"agreement": {"id": "t1-leicester", "publisher": "ukhsa", "subscriber": "leicester"}},
	},
)

test_the_publishers_ig_lead_the_board_and_the_arbiter_revoke_an_agreement if {
	every route in {"/agreements/{ident}/revoke", "/agreements/{ident}/reinstate"} {
		_allowed(_agreement(_who("ukhsa", "ig-lead"), route))
		_allowed(_agreement(_who("nhse", "governance-board"), route))
		_allowed(_agreement(_who("accord-arbiter", "arbiter"), route))
	}
}

test_no_one_else_revokes_an_agreement if {
	every who in [
		_who("dhsc", "ig-lead"), _who("leicester", "dph"), _who("accord", "service"),
		_who("accord", "operator"), _who("blaby", "governance-board"),
	] {
		not _allowed(_agreement(who, "/agreements/{ident}/revoke"))
	}
	_reasons(_agreement(_who("leicester", "dph"), "/agreements/{ident}/revoke")) == [
		"only ukhsa's IG lead, the governance board or the arbiter may revoke or reinstate agreement t1-leicester; leicester as dph may not",
	]
}

test_only_the_operator_rotates_pseudonym_keys if {
	_allowed(_call("governance", "POST", "/pseudonym-keys/rotate", _who("accord", "operator")))
	every who in [_who("accord", "service"), _who("dhsc", "governance-board"), _who("leicester-city-council", "dph")] {
		not _allowed(_call("governance", "POST", "/pseudonym-keys/rotate", who))
	}
}

test_only_the_operator_records_drill_reports if {
	_allowed(_call("governance", "POST", "/drill-reports", _who("accord", "operator")))
	every who in [_who("accord", "service"), _who("ukhsa", "ig-lead"), _who("accord-arbiter", "arbiter")] {
		not _allowed(_call("governance", "POST", "/drill-reports", who))
	}
}

test_the_operator_registers_stream_schemas_but_no_delivery_subject if {
	register := object.union(_call("registry", "POST", "/subjects/{subject}/versions", _who("accord", "operator")), {"params": {"subject": "ingest.ukhsa.drill-1-value"}})
	_allowed(register)
	check := object.union(_call("registry", "POST", "/compatibility/subjects/{subject}/versions/{version}", _who("accord", "operator")), {"params": {"subject": "ingest.ukhsa.drill-1-value", "version": "latest"}})
	_allowed(check)
	not _allowed(object.union(register, {"params": {"subject": "deliver.leicester-city-council.dph.ukhsa.positive-tests-value"}}))
	not _allowed(object.union(register, {"method": "DELETE", "route": "/subjects/{subject}"}))
	not _allowed(object.union(register, {"identity": _who("dhsc", "governance-board")}))
}

test_only_the_operator_applies_the_catalog if {
	_allowed(_call("governance", "PUT", "/catalog", _who("accord", "operator")))
	not _allowed(_call("governance", "POST", "/disputes", _who("accord", "operator")))
	not _allowed(_call("api", "POST", "/streams/{stream}/records", _who("accord", "operator")))
	every who in [_who("accord", "service"), _who("dhsc", "governance-board"), _who("accord-arbiter", "arbiter")] {
		not _allowed(_call("governance", "PUT", "/catalog", who))
	}
}

# -- access requests ------------------------------------------------------------------------------------------------

_access_request(tier) := {
	"id": "r-1", "body": "leicester", "role": "dph", "publisher": "ukhsa", "state": "awaiting", "tier": tier,
	"reviewers": _request_tiers[tier],
	"reviewed_by": array.slice(_request_tiers, 0, tier + 1),
}

_request_tiers := [
	{"bodies": ["ukhsa"], "roles": ["ig-lead"]},
	{"bodies": ["dhsc", "nhse"], "roles": ["governance-board"]},
	{"bodies": ["accord-arbiter"], "roles": ["arbiter"]},
]

_on_request(who, method, route, tier) := object.union(
	_call("governance", method, route, who),
	{"params": {"ident": "r-1"}, "resource": {"request": _access_request(tier)}},
)

test_any_member_makes_and_lists_requests if {
	_allowed(_call("governance", "POST", "/requests", _who("leicester", "dph")))
	_allowed(_call("governance", "GET", "/requests", _who("blaby", "environmental-health")))
	not _allowed(_call("governance", "POST", "/requests", _who("nowhere", "dph")))
	not _allowed(_call("governance", "POST", "/requests", _who("accord", "operator")))
}

test_a_request_is_read_by_its_body_and_the_reviewers_it_has_reached if {
	_allowed(_on_request(_who("leicester", "analyst"), "GET", "/requests/{ident}", 0))
	_allowed(_on_request(_who("ukhsa", "ig-lead"), "GET", "/requests/{ident}", 0))
	_allowed(_on_request(_who("ukhsa", "ig-lead"), "GET", "/requests/{ident}", 1))
	_allowed(_on_request(_who("dhsc", "governance-board"), "GET", "/requests/{ident}", 1))
	_allowed(_on_request(_who("ons", "auditor"), "GET", "/requests/{ident}", 0))
	not _allowed(_on_request(_who("dhsc", "governance-board"), "GET", "/requests/{ident}", 0))
	not _allowed(_on_request(_who("blaby", "environmental-health"), "GET", "/requests/{ident}", 2))
	_reasons(_on_request(_who("blaby", "environmental-health"), "GET", "/requests/{ident}", 0)) == [
		"request r-1 is seen only by leicester, which made it, and its reviewers",
	]
}

test_only_the_current_tiers_reviewers_approve_or_refuse if {
	every route in {"/requests/{ident}/approvals", "/requests/{ident}/refusal"} {
		_allowed(_on_request(_who("ukhsa", "ig-lead"), "POST", route, 0))
		not _allowed(_on_request(_who("ukhsa", "governance-board"), "POST", route, 0))
		not _allowed(_on_request(_who("ukhsa", "ig-lead"), "POST", route, 1))
		_allowed(_on_request(_who("nhse", "governance-board"), "POST", route, 1))
		not _allowed(_on_request(_who("leicester", "dph"), "POST", route, 0))
	}
	_reasons(_on_request(_who("leicester", "dph"), "POST", "/requests/{ident}/approvals", 0)) == [
		"request r-1 (by leicester) is at tier 1, reviewed by ig-lead of ukhsa; leicester as dph may not review it",
	]
}

test_the_requesting_body_never_reviews_its_own_request if {
	own := object.union(_access_request(0), {"body": "ukhsa", "reviewers": {"bodies": ["ukhsa"], "roles": ["ig-lead"]}})
	request := object.union(
		_call("governance", "POST", "/requests/{ident}/approvals", _who("ukhsa", "ig-lead")),
		{"params": {"ident": "r-1"}, "resource": {"request": own}},
	)
	not _allowed(request)
}

test_a_body_lists_only_its_own_requests_and_those_it_reviews if {
	other := object.union(_access_request(0), {"id": "r-2", "body": "blaby"})
	escalated := object.union(_access_request(1), {"id": "r-3"})
	requests := [_access_request(0), other, escalated]
	authz.visible_requests == ["r-1", "r-3"] with input as {"identity": _who("leicester", "dph"), "requests": requests}
		with data.accord.catalog as _catalog
	authz.visible_requests == ["r-2"] with input as {"identity": _who("blaby", "environmental-health"), "requests": requests}
		with data.accord.catalog as _catalog
	authz.visible_requests == ["r-3"] with input as {"identity": _who("dhsc", "governance-board"), "requests": requests}
		with data.accord.catalog as _catalog
	authz.visible_requests == ["r-1", "r-2", "r-3"] with input as {"identity": _who("ukhsa", "ig-lead"), "requests": requests}
		with data.accord.catalog as _catalog
	authz.visible_requests == [] with input as {"identity": _who("nowhere", "dph"), "requests": requests}
		with data.accord.catalog as _catalog
	authz.visible_requests == ["r-1", "r-2", "r-3"] with input as {"identity": _who("accord", "service"), "requests": requests}
		with data.accord.catalog as _catalog
}

test_a_member_sends_receipts_for_its_own_deliveries_only_in_its_roles if {
	receipt := object.union(
		_call("api", "POST", "/deliveries/{stream}/receipts", _who("leicester", "dph")),
		{"params": {"stream": "ukhsa.positive-tests"}},
	)
	_allowed(receipt)
	not _allowed(object.union(receipt, {"identity": _who("leicester", "ig-lead")}))
	not _allowed(object.union(receipt, {"identity": _who("accord", "service")}))
}

test_a_body_registers_and_retires_only_its_own_receipt_keys if {
	_allowed(_call("governance", "POST", "/receipt-keys", _who("leicester", "dph")))
	_allowed(_call("governance", "GET", "/receipt-keys", _who("blaby", "environmental-health")))
	not _allowed(_call("governance", "POST", "/receipt-keys", _who("nowhere", "dph")))
	retire := object.union(
		_call("governance", "POST", "/receipt-keys/{ident}/retire", _who("leicester", "dph")),
		{"params": {"ident": "0123456789abcdef"}, "resource": {"receipt_key": {"id": "0123456789abcdef", "body": "leicester"}}},
	)
	_allowed(retire)
	_allowed(object.union(retire, {"resource": {"receipt_key": {"id": "0123456789abcdef", "body": null}}}))
	other := object.union(retire, {"identity": _who("blaby", "environmental-health")})
	not _allowed(other)
	_reasons(other) == ["receipt key 0123456789abcdef belongs to leicester; blaby may retire only its own"]
}

test_members_read_review_tasks_and_record_a_review if {
	_allowed(_call("governance", "GET", "/reviews", _who("leicester", "dph")))
	_allowed(_call("governance", "POST", "/reviews/{task}/completion", _who("ukhsa", "ig-lead")))
	not _allowed(_call("governance", "DELETE", "/reviews", _who("ukhsa", "ig-lead")))
}

test_console_pages_for_any_member_in_any_role if {
	authz.decision.allow with input as _call("console", "GET", "/catalogue", _who("leicester", "analyst"))
		with data.accord.catalog as _catalog
	authz.decision.allow with input as _call("console", "GET", "/my-data/{stream}", _who("blaby", "environmental-health"))
		with data.accord.catalog as _catalog
	authz.decision.allow with input as _call("console", "POST", "/disputes/{ident}/decision", _who("dhsc", "governance-board"))
		with data.accord.catalog as _catalog
	authz.decision.allow with input as _call("console", "POST", "/disputes/{ident}/appeal", _who("blaby", "environmental-health"))
		with data.accord.catalog as _catalog
}

test_console_refuses_a_role_the_body_does_not_hold if {
	answer := authz.decision with input as _call("console", "GET", "/catalogue", _who("leicester", "arbiter"))
		with data.accord.catalog as _catalog
	not answer.allow
	answer.reasons == ["leicester holds no role arbiter in the applied catalog"]
}

test_console_refuses_a_page_it_does_not_have_and_a_post_to_a_page if {
	not authz.allow with input as _call("console", "GET", "/admin", _who("leicester", "dph"))
		with data.accord.catalog as _catalog
	not authz.allow with input as _call("console", "POST", "/catalogue", _who("leicester", "dph"))
		with data.accord.catalog as _catalog
}

test_the_operator_has_no_console if {
	not authz.allow with input as _call("console", "GET", "/catalogue", _who("accord", "operator"))
		with data.accord.catalog as _catalog
}

test_console_access_request_pages_and_forms_for_any_member if {
	some route in ["/requests", "/requests/new", "/requests/{ident}"]
	authz.decision.allow with input as _call("console", "GET", route, _who("leicester", "dph"))
		with data.accord.catalog as _catalog
}

test_console_access_request_forms_post_only if {
	authz.decision.allow with input as _call("console", "POST", "/requests", _who("leicester", "dph"))
		with data.accord.catalog as _catalog
	authz.decision.allow with input as _call("console", "POST", "/requests/{ident}/approvals", _who("ukhsa", "ig-lead"))
		with data.accord.catalog as _catalog
	authz.decision.allow with input as _call("console", "POST", "/requests/{ident}/refusal", _who("ukhsa", "ig-lead"))
		with data.accord.catalog as _catalog
	not authz.allow with input as _call("console", "POST", "/requests/new", _who("leicester", "dph"))
		with data.accord.catalog as _catalog
	not authz.allow with input as _call("console", "DELETE", "/requests/{ident}", _who("leicester", "dph"))
		with data.accord.catalog as _catalog
}

test_console_emergency_and_publisher_pages_for_any_member if {
	_allowed(_call("console", "GET", "/emergency", _who("leicester", "analyst")))
	_allowed(_call("console", "GET", "/publisher", _who("blaby", "environmental-health")))
	_allowed(_call("console", "GET", "/my-data/{stream}/why-not", _who("leicester", "dph")))
	not _allowed(_call("console", "GET", "/emergency", _who("leicester", "arbiter")))
}

test_console_declare_and_lift_for_declarers_only if {
	_allowed(_call("console", "POST", "/emergency/declare", _who("dhsc", "governance-board")))
	_allowed(_call("console", "POST", "/emergency/lift", _who("accord-arbiter", "arbiter")))
	not _allowed(_call("console", "POST", "/emergency/declare", _who("ukhsa", "governance-board")))
	not _allowed(_call("console", "GET", "/emergency/declare", _who("dhsc", "governance-board")))
	_reasons(_call("console", "POST", "/emergency/declare", _who("leicester", "dph"))) == [
		"only an emergency declarer may change a level; leicester as dph is not one",
	]
}

test_console_break_glass_for_the_ladders_roles_only if {
	_allowed(_call("console", "POST", "/emergency/break-glass", _who("leicester", "dph")))
	_reasons(_call("console", "POST", "/emergency/break-glass", _who("leicester", "analyst"))) == [
		"break-glass is for the roles dph; leicester as analyst is not one",
	]
}

_publisher_stream(body, role, stream) := object.union(
	_call("console", "GET", "/publisher/{stream}", _who(body, role)),
	{"params": {"stream": stream}},
)

test_console_quarantine_for_the_streams_owner_only if {
	_allowed(_publisher_stream("ukhsa", "ig-lead", "ukhsa.positive-tests"))
	not _allowed(_publisher_stream("dhsc", "ig-lead", "ukhsa.positive-tests"))
	_reasons(_publisher_stream("dhsc", "ig-lead", "ukhsa.positive-tests")) == [
		"dhsc sees the quarantine of its own streams only, not ukhsa.positive-tests",
	]
}

test_console_audit_search_and_export_for_governance_roles_and_the_operator if {
	_allowed(_call("console", "GET", "/audit/search", _who("ukhsa", "ig-lead")))
	_allowed(_call("console", "GET", "/audit/export.jsonl", _who("dhsc", "governance-board")))
	_allowed(_call("console", "GET", "/audit/search", _who("accord-arbiter", "arbiter")))
	_allowed(_call("console", "GET", "/audit/export.jsonl", _who("ons", "auditor")))
	_allowed(_call("console", "GET", "/audit/export.jsonl", _who("accord", "operator")))
	not _allowed(_call("console", "GET", "/catalogue", _who("accord", "operator")))
	_reasons(_call("console", "GET", "/audit/export.jsonl", _who("leicester", "dph"))) == [
		"the audit trail is searched and exported by IG leads, the governance board, the arbiter and auditors; leicester as dph may not",
	]
}
