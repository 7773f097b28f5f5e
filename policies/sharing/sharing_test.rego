package accord.sharing_test

import data.accord.sharing

_agreements := {"t1-leicester-dph": {
	"subscriber": "leicester-city-council",
	"stream": "ukhsa.positive-tests",
	"purpose": "health-protection",
	"roles": ["dph"],
	"valid_from": "2020-06-01T00:00:00Z",
	"valid_until": "2020-07-01T00:00:00Z",
	"emergency_level_required": "normal",
}}

_request := {
	"subscriber": "leicester-city-council",
	"role": "dph",
	"stream": "ukhsa.positive-tests",
	"purpose": "health-protection",
	"time": "2020-06-24T09:00:00Z",
	"emergency_level": "emergency",
}

test_agreement_in_force_allows if {
	d := sharing.decision with data.accord.agreements as _agreements with input as _request
	d.allow
	d.agreements == ["t1-leicester-dph"]
	d.reasons == []
}

test_no_agreements_at_all_denies if {
	d := sharing.decision with data.accord.agreements as {} with input as _request
	not d.allow
	d.reasons == ["no agreement names this subscriber, role, stream and purpose"]
}

test_other_council_denied if {
	not sharing.allow with data.accord.agreements as _agreements
		with input as object.union(_request, {"subscriber": "nottingham-city-council"})
}

test_other_role_denied if {
	not sharing.allow with data.accord.agreements as _agreements
		with input as object.union(_request, {"role": "analyst"})
}

test_other_purpose_denied if {
	not sharing.allow with data.accord.agreements as _agreements
		with input as object.union(_request, {"purpose": "enforcement"})
}

test_expired_agreement_denies_with_reason if {
	d := sharing.decision with data.accord.agreements as _agreements
		with input as object.union(_request, {"time": "2020-07-01T00:00:00Z"})
	not d.allow
	d.reasons == ["agreement t1-leicester-dph is not in force at 2020-07-01T00:00:00Z"]
}

test_not_yet_valid_denies if {
	not sharing.allow with data.accord.agreements as _agreements
		with input as object.union(_request, {"time": "2020-05-31T23:59:59Z"})
}

test_emergency_level_required if {
	agreements := {"t1-leicester-dph": object.union(
		_agreements["t1-leicester-dph"],
		{"emergency_level_required": "emergency"},
	)}
	d := sharing.decision with data.accord.agreements as agreements
		with input as object.union(_request, {"emergency_level": "enhanced"})
	not d.allow
	d.reasons == ["agreement t1-leicester-dph needs emergency level emergency, current level is enhanced"]
}

test_unknown_emergency_level_denies if {
	not sharing.allow with data.accord.agreements as _agreements
		with input as object.union(_request, {"emergency_level": "panic"})
}
