package accord.plans_test

import data.accord.plans

_leicester := "leicester-city-council"

_stream := "ukhsa.positive-tests"

_t1_leicester := {
	"template": "t1-positive-tests",
	"publisher": "ukhsa", "subscriber": _leicester, "stream": _stream,
	"purpose": "health-protection",
	"legal_basis": ["copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-i"],
	"tiers": [
		{"name": "dph", "roles": ["dph"], "other_fields": "keep", "fields": {
			"nhs_number": {"transform": "keep", "method": null, "as": null, "params": {}},
			"name": {"transform": "pseudonymise", "method": null, "as": null, "params": {}},
			"specimen_id": {"transform": "drop", "method": null, "as": null, "params": {}},
		}},
		{"name": "analyst", "roles": ["analyst"], "other_fields": "drop", "fields": {
			"lsoa": {"transform": "keep", "method": null, "as": null, "params": {}},
			"dob": {
				"transform": "generalise", "method": "age-band", "as": "age_band",
				"params": {"at": "specimen_date"},
			},
			"sex": {"transform": "keep", "method": null, "as": null, "params": {}},
		}},
	],
	"row_scope": {"areas": ["E06000016"]},
	"valid_from": "2020-03-20T00:00:00Z", "valid_until": "2022-06-30T00:00:00Z",
	"review_date": "2020-09-30",
	"emergency_level_required": "normal",
	"signatories": [{"body": "ukhsa", "name": "A. Person", "role": "ig-lead"}],
}

# A county: its row scope is the county and its districts.
_t1_nottinghamshire := object.union(_t1_leicester, {
	"subscriber": "nottinghamshire-county-council",
	"row_scope": {"areas": ["E07000170", "E07000171", "E10000024"]},
})

_catalog := {
	"revision": "c-3f9a1b2c4d5e",
	"la_vintage": "ONS December 2023",
	"bodies": {
		_leicester: {
			"name": "Leicester City Council", "kind": "local", "tier": "unitary",
			"areas": ["E06000016"], "served_areas": ["E06000016"], "roles": ["analyst", "dph", "ig-lead"],
		},
		"nottinghamshire-county-council": {
			"name": "Nottinghamshire County Council", "kind": "local", "tier": "county",
			"areas": ["E10000024"], "served_areas": ["E07000170", "E07000171", "E10000024"],
			"roles": ["analyst", "dph"],
		},
		"nottingham-city-council": {
			"name": "Nottingham City Council", "kind": "local", "tier": "unitary",
			"areas": ["E06000018"], "served_areas": ["E06000018"], "roles": ["analyst", "dph"],
		},
	},
	"streams": {
		_stream: {
			"owner": "ukhsa", "subject": "ingest.ukhsa.positive-tests-value", "classification": "special-category",
			"jurisdiction": ["utla", "ltla"],
			"fields": {
				"specimen_id": {"tags": ["direct-identifier"]},
				"nhs_number": {"tags": ["direct-identifier"]},
				"name": {"tags": ["direct-identifier"]},
				"address": {"tags": ["direct-identifier"]},
				"dob": {"tags": ["quasi-identifier"]},
				"postcode": {"tags": ["quasi-identifier"]},
				"lsoa": {"tags": []},
				"sex": {},
				"specimen_date": {"tags": []},
			},
		},
		"ons.deaths": {"owner": "ons", "jurisdiction": ["ltla"], "fields": {"lsoa": {"tags": []}}},
	},
	"agreements": {
		"t1-leicester": _t1_leicester,
		"t1-nottinghamshire": _t1_nottinghamshire,
		"d1-leicester-deaths": object.union(_t1_leicester, {"stream": "ons.deaths", "tiers": [
			{"name": "ig", "roles": ["ig-lead"], "other_fields": "keep", "fields": {}},
		]}),
	},
}

_request := {
	"subscriber": _leicester, "role": "dph", "stream": _stream,
	"purpose": "health-protection", "time": "2020-06-24T09:00:00Z", "emergency_level": "normal",
	"revoked": ["t1-nottingham"], "grants": [], "state_revision": 17,
}

_keep(name) := {"transform": "keep", "method": null, "as": name, "params": {}}

_with_agreement(id, changes) := object.union(_catalog, {"agreements": {id: object.union(_t1_leicester, changes)}})

_no_agreement := "no agreement names this subscriber, role, stream and purpose"

_dph_fields := {
	"nhs_number": _keep("nhs_number"),
	"name": {"transform": "pseudonymise", "method": null, "as": "name", "params": {}},
	"dob": _keep("dob"), "postcode": _keep("postcode"), "lsoa": _keep("lsoa"),
	"sex": _keep("sex"), "specimen_date": _keep("specimen_date"),
}

_analyst_fields := {
	"lsoa": _keep("lsoa"),
	"dob": {"transform": "generalise", "method": "age-band", "as": "age_band", "params": {"at": "specimen_date"}},
	"sex": _keep("sex"),
}

test_dph_gets_every_field_but_unnamed_direct_identifiers if {
	p := plans.plan with data.accord.catalog as _catalog with input as _request
	p == {
		"allow": true, "reasons": [], "agreements": ["t1-leicester"],
		"subscriber": _leicester, "role": "dph", "stream": _stream, "purpose": "health-protection",
		"fields": _dph_fields,
		"scopes": [{"agreements": ["t1-leicester"], "areas": ["E06000016"], "fields": _dph_fields}],
		"row_filter": {"jurisdiction": ["utla", "ltla"], "areas": ["E06000016"], "required": []},
		"expiry": "2022-06-30T00:00:00Z",
		"opt_out": {"applies": false, "reasons": []},
		"revision": "c-3f9a1b2c4d5e/17",
	}
	plans.allow with data.accord.catalog as _catalog with input as _request
}

test_analyst_gets_exactly_lsoa_age_band_and_sex if {
	p := plans.plan with data.accord.catalog as _catalog with input as object.union(_request, {"role": "analyst"})
	p.allow
	p.fields == {
		"lsoa": _keep("lsoa"),
		"dob": {"transform": "generalise", "method": "age-band", "as": "age_band", "params": {"at": "specimen_date"}},
		"sex": _keep("sex"),
	}
}

test_county_rows_are_the_county_and_its_districts if {
	p := plans.plan with data.accord.catalog as _catalog
		with input as object.union(_request, {"subscriber": "nottinghamshire-county-council"})
	p.agreements == ["t1-nottinghamshire"]
	p.row_filter.areas == ["E07000170", "E07000171", "E10000024"]
}

test_unknown_subscriber_denied_with_reason if {
	p := plans.plan with data.accord.catalog as _catalog
		with input as object.union(_request, {"subscriber": "no-such-council"})
	p == {
		"allow": false, "reasons": [_no_agreement], "agreements": [],
		"subscriber": "no-such-council", "role": "dph", "stream": _stream, "purpose": "health-protection",
		"fields": {}, "scopes": [],
		"row_filter": {"jurisdiction": ["utla", "ltla"], "areas": [], "required": []},
		"expiry": null,
		"opt_out": {"applies": false, "reasons": []},
		"revision": "c-3f9a1b2c4d5e/17",
	}
	not plans.allow with data.accord.catalog as _catalog with input as object.union(_request, {"subscriber": "no-such-council"})
}

test_nottingham_denied_under_leicesters_agreement if {
	p := plans.plan with data.accord.catalog as _catalog
		with input as object.union(_request, {"subscriber": "nottingham-city-council"})
	not p.allow
	p.reasons == [_no_agreement]
}

test_role_purpose_or_stream_not_named_denied if {
	every change in [{"role": "ig-lead"}, {"purpose": "enforcement"}, {"stream": "ons.deaths"}] {
		p := plans.plan with data.accord.catalog as _catalog with input as object.union(_request, change)
		p.reasons == [_no_agreement]
	}
}

test_not_yet_in_force_and_expired_give_distinct_reasons if {
	early := plans.plan with data.accord.catalog as _catalog
		with input as object.union(_request, {"time": "2020-03-19T23:59:59Z"})
	early.reasons == ["agreement t1-leicester is not yet in force at 2020-03-19T23:59:59Z (valid from 2020-03-20T00:00:00Z)"]
	late := plans.plan with data.accord.catalog as _catalog
		with input as object.union(_request, {"time": "2022-06-30T00:00:00Z"})
	late.reasons == ["agreement t1-leicester expired at 2022-06-30T00:00:00Z (request time 2022-06-30T00:00:00Z)"]
	late.fields == {}
	late.expiry == null
}

test_validity_bounds_are_inclusive_then_exclusive if {
	plans.allow with data.accord.catalog as _catalog with input as object.union(_request, {"time": "2020-03-20T00:00:00Z"})
	plans.allow with data.accord.catalog as _catalog
		with input as object.union(_request, {"time": "2022-06-29T23:59:59.999999Z"})
}

test_revoked_agreement_denied if {
	p := plans.plan with data.accord.catalog as _catalog
		with input as object.union(_request, {"revoked": ["t1-leicester"]})
	not p.allow
	p.reasons == ["agreement t1-leicester is revoked"]
}

test_every_failed_condition_is_a_reason_sorted if {
	p := plans.plan with data.accord.catalog as _with_agreement("t1-leicester", {"emergency_level_required": "emergency"})
		with input as object.union(_request, {"revoked": ["t1-leicester"], "time": "2023-01-01T00:00:00Z"})
	p.reasons == [
		"agreement t1-leicester expired at 2022-06-30T00:00:00Z (request time 2023-01-01T00:00:00Z)",
		"agreement t1-leicester is revoked",
		"agreement t1-leicester needs emergency level emergency (current normal)",
	]
}

test_emergency_level_unmet_denied if {
	p := plans.plan with data.accord.catalog as _with_agreement("t1-leicester", {"emergency_level_required": "emergency"})
		with input as object.union(_request, {"emergency_level": "enhanced"})
	not p.allow
	p.reasons == ["agreement t1-leicester needs emergency level emergency (current enhanced)"]
}

test_emergency_level_met_or_exceeded_allows if {
	catalog := _with_agreement("t1-leicester", {"emergency_level_required": "enhanced"})
	plans.allow with data.accord.catalog as catalog with input as object.union(_request, {"emergency_level": "enhanced"})
	plans.allow with data.accord.catalog as catalog with input as object.union(_request, {"emergency_level": "emergency"})
}

test_unknown_emergency_level_denied if {
	p := plans.plan with data.accord.catalog as _catalog with input as object.union(_request, {"emergency_level": "panic"})
	p.reasons == ["agreement t1-leicester needs emergency level normal (current panic)"]
}

test_grant_from_input_allows if {
	grant := object.union(_t1_leicester, {
		"id": "dispute-7-nottingham", "subscriber": "nottingham-city-council",
		"row_scope": {"areas": ["E06000018"]},
	})
	request := object.union(_request, {"subscriber": "nottingham-city-council", "grants": [grant]})
	p := plans.plan with data.accord.catalog as _catalog with input as request
	p.allow
	p.agreements == ["dispute-7-nottingham"]
	p.row_filter.areas == ["E06000018"]
	not plans.allow with data.accord.catalog as _catalog
		with input as object.union(request, {"revoked": ["dispute-7-nottingham"]})
}

test_grant_cannot_replace_a_catalog_agreement if {
	grant := object.union(_t1_leicester, {"id": "t1-leicester", "row_scope": {"areas": ["E92000001"]}})
	p := plans.plan with data.accord.catalog as _catalog with input as object.union(_request, {"grants": [grant]})
	p.row_filter.areas == ["E06000016"]
}

test_first_of_grants_sharing_an_id_wins if {
	first := object.union(_t1_leicester, {"id": "g1", "row_scope": {"areas": ["E06000018"]}})
	second := object.union(_t1_leicester, {"id": "g1", "row_scope": {"areas": ["E92000001"]}})
	p := plans.plan with data.accord.catalog as {} with input as object.union(_request, {"grants": [first, second]})
	p.agreements == ["g1"]
	p.row_filter.areas == ["E06000018"]
}

_surge_fields := {
	"dob": {"transform": "pseudonymise", "method": null, "as": "dob", "params": {}},
	"lsoa": {"transform": "mask", "method": null, "as": "lsoa", "params": {"keep_last": "2"}},
	"sex": _keep("gender"),
	"postcode": {"transform": "generalise", "method": "postcode-district", "as": "postcode_district", "params": {}},
	"name": {"transform": "mask", "method": null, "as": "name", "params": {"keep_last": "2"}},
}

test_two_agreements_each_treat_fields_only_in_their_own_areas if {
	surge := object.union(_t1_leicester, {
		"tiers": [{"name": "analyst", "roles": ["analyst"], "fields": {
			"dob": {"transform": "pseudonymise", "method": null, "as": null, "params": {}},
			"lsoa": {"transform": "mask", "method": null, "as": null, "params": {"keep_last": "2"}},
			"sex": {"transform": "keep", "method": null, "as": "gender", "params": {}},
			"postcode": {"transform": "generalise", "method": "postcode-district", "as": null, "params": null},
			"name": {"transform": "mask", "method": null, "as": null, "params": {"keep_last": "2"}},
			"nhs_number": {"transform": "drop", "method": null, "as": null, "params": {}},
		}}],
		"row_scope": {"areas": ["E06000016", "E06000018"]},
		"valid_until": "2020-12-31T00:00:00Z",
	})
	catalog := object.union(_catalog, {"agreements": {"t5-leicester-surge": surge}})
	p := plans.plan with data.accord.catalog as catalog with input as object.union(_request, {"role": "analyst"})
	p.agreements == ["t1-leicester", "t5-leicester-surge"]

	# Nottingham's rows (E06000018) are the surge agreement's alone: its treatment, never t1-leicester's.
	p.scopes == [
		{"agreements": ["t1-leicester"], "areas": ["E06000016"], "fields": _analyst_fields},
		{"agreements": ["t5-leicester-surge"], "areas": ["E06000016", "E06000018"], "fields": _surge_fields},
	]

	# The summary: the most revealing treatment of each field in any scope (what a Leicester row may receive).
	p.fields == {
		"dob": {"transform": "generalise", "method": "age-band", "as": "age_band", "params": {"at": "specimen_date"}},
		"lsoa": _keep("lsoa"),
		"sex": _keep("sex"),
		"postcode": {"transform": "generalise", "method": "postcode-district", "as": "postcode_district", "params": {}},
		"name": {"transform": "mask", "method": null, "as": "name", "params": {"keep_last": "2"}},
	}
	p.row_filter.areas == ["E06000016", "E06000018"]
	p.expiry == "2020-12-31T00:00:00Z"
}

# The issue's case: a county-wide minimised agreement plus a district one with identifiers, for one subscriber.
test_a_district_agreements_identifiers_stay_in_the_district if {
	county := object.union(_t1_nottinghamshire, {"tiers": [_t1_leicester.tiers[1]]})
	district := object.union(_t1_nottinghamshire, {
		"tiers": [{"name": "eh", "roles": ["analyst"], "other_fields": "drop", "fields": {
			"nhs_number": {"transform": "keep", "method": null, "as": null, "params": {}},
			"name": {"transform": "keep", "method": null, "as": null, "params": {}},
			"lsoa": {"transform": "keep", "method": null, "as": null, "params": {}},
		}}],
		"row_scope": {"areas": ["E07000170"]},
	})
	catalog := object.union(_catalog, {"agreements": {"t1-nottinghamshire": county, "t1-ashfield-outbreak": district}})
	request := object.union(_request, {"subscriber": "nottinghamshire-county-council", "role": "analyst"})
	p := plans.plan with data.accord.catalog as catalog with input as request
	p.scopes == [
		{"agreements": ["t1-ashfield-outbreak"], "areas": ["E07000170"], "fields": {
			"nhs_number": _keep("nhs_number"), "name": _keep("name"), "lsoa": _keep("lsoa"),
		}},
		{"agreements": ["t1-nottinghamshire"], "areas": ["E07000170", "E07000171", "E10000024"], "fields": _analyst_fields},
	]
	p.row_filter.areas == ["E07000170", "E07000171", "E10000024"]
}

# Agreements over the same areas cover the same rows: one scope, each field the most revealing offer among them.
test_agreements_over_the_same_areas_are_one_scope if {
	linkage := object.union(_t1_leicester, {"tiers": [{"name": "linkage", "roles": ["analyst"], "fields": {
		"nhs_number": {"transform": "pseudonymise", "method": null, "as": null, "params": {}},
		"dob": {"transform": "mask", "method": null, "as": null, "params": {}},
		"sex": {"transform": "keep", "method": null, "as": "gender", "params": {}},
	}}]})
	catalog := object.union(_catalog, {"agreements": {"t1-leicester-linkage": linkage}})
	p := plans.plan with data.accord.catalog as catalog with input as object.union(_request, {"role": "analyst"})
	merged := object.union(_analyst_fields, {
		"nhs_number": {"transform": "pseudonymise", "method": null, "as": "nhs_number", "params": {}},
	})
	p.scopes == [{"agreements": ["t1-leicester", "t1-leicester-linkage"], "areas": ["E06000016"], "fields": merged}]
	p.fields == merged
}

test_agreements_with_one_treatment_share_one_scope if {
	nottingham := object.union(_t1_leicester, {"row_scope": {"areas": ["E06000018"]}})
	catalog := object.union(_catalog, {"agreements": {"t1-leicester-nottingham": nottingham}})
	p := plans.plan with data.accord.catalog as catalog with input as _request
	p.scopes == [{
		"agreements": ["t1-leicester", "t1-leicester-nottingham"],
		"areas": ["E06000016", "E06000018"], "fields": _dph_fields,
	}]
}

test_an_agreement_delivering_no_field_is_a_scope_of_its_own if {
	bare := object.union(_t1_leicester, {
		"tiers": [{"name": "count", "roles": ["dph"], "other_fields": "drop", "fields": {}}],
		"row_scope": {"areas": ["E06000018"]},
	})
	catalog := object.union(_catalog, {"agreements": {"t9-leicester-counts": bare}})
	p := plans.plan with data.accord.catalog as catalog with input as _request
	p.scopes == [
		{"agreements": ["t1-leicester"], "areas": ["E06000016"], "fields": _dph_fields},
		{"agreements": ["t9-leicester-counts"], "areas": ["E06000018"], "fields": {}},
	]
}

test_a_refused_plan_has_no_scopes if {
	p := plans.plan with data.accord.catalog as _catalog with input as object.union(_request, {"revoked": ["t1-leicester"]})
	p.scopes == []
}

test_required_fields_of_every_granting_agreement_tighten_the_rows if {
	strict := object.union(_t1_leicester, {"required_fields": ["postcode", "nhs_number"]})
	surge := object.union(_t1_leicester, {"required_fields": ["lsoa", "postcode"]})
	catalog := object.union(_catalog, {"agreements": {"t1-leicester": strict, "t1-surge": surge}})
	p := plans.plan with data.accord.catalog as catalog with input as _request
	p.row_filter.required == ["lsoa", "nhs_number", "postcode"]
}

test_required_fields_of_a_revoked_agreement_do_not_apply if {
	strict := object.union(_t1_leicester, {"id": "t1-strict", "required_fields": ["nhs_number"]})
	catalog := object.union(_catalog, {"agreements": {"t1-strict": strict}})
	p := plans.plan with data.accord.catalog as catalog with input as object.union(_request, {"revoked": ["t1-strict"]})
	p.allow
	p.row_filter.required == []
}

test_expiry_is_the_earliest_instant_not_string if {
	grants := [
		object.union(_t1_leicester, {"id": "g-utc", "valid_until": "2020-12-31T23:45:00Z"}),
		object.union(_t1_leicester, {"id": "g-bst", "valid_until": "2021-01-01T00:30:00+01:00"}),
	]
	p := plans.plan with data.accord.catalog as {} with input as object.union(_request, {"grants": grants})
	p.expiry == "2021-01-01T00:30:00+01:00"
}

test_malformed_field_specs_are_not_delivered if {
	agreement := {"tiers": [{"name": "dph", "roles": ["dph"], "fields": {
		"dob": {"transform": "generalise", "method": null, "as": null, "params": {}},
		"sex": {"transform": "shuffle", "method": null, "as": null, "params": {}},
		"lsoa": {"transform": "generalise", "method": "lsoa", "as": null, "params": {"from": "postcode"}},
		"name": {"transform": "mask", "method": "age-band"},
	}}]}
	p := plans.plan with data.accord.catalog as _with_agreement("t1-leicester", agreement) with input as _request
	p.fields == {
		"lsoa": {"transform": "generalise", "method": "lsoa", "as": "lsoa", "params": {"from": "postcode"}},
		"name": {"transform": "mask", "method": null, "as": "name", "params": {}},
	}
}

test_missing_optional_inputs_default if {
	request := object.remove(_request, ["emergency_level", "revoked", "grants", "state_revision"])
	p := plans.plan with data.accord.catalog as _catalog with input as request
	p.allow
	p.revision == "c-3f9a1b2c4d5e/0"
	emergency := plans.plan with data.accord.catalog as _with_agreement("t1-leicester", {"emergency_level_required": "emergency"})
		with input as request
	emergency.reasons == ["agreement t1-leicester needs emergency level emergency (current normal)"]
}

test_null_optional_inputs_default if {
	request := object.union(_request, {"emergency_level": null, "revoked": null, "grants": null, "state_revision": null})
	p := plans.plan with data.accord.catalog as _catalog with input as request
	p.allow
	p.revision == "c-3f9a1b2c4d5e/0"
}

test_missing_emergency_requirement_means_normal if {
	catalog := {"agreements": {"t1-leicester": object.remove(_t1_leicester, ["emergency_level_required"])}}
	plans.allow with data.accord.catalog as catalog with input as _request
}

test_no_catalog_denies_with_no_revision if {
	p := plans.plan with input as _request
	not p.allow
	p.reasons == [_no_agreement]
	p.row_filter == {"jurisdiction": [], "areas": [], "required": []}
	p.revision == "none/17"
}

test_unreadable_request_time_denied_with_reason if {
	requests := [
		object.remove(_request, ["time"]),
		object.union(_request, {"time": 1593000000}),
		object.union(_request, {"time": "24/06/2020"}),
	]
	every request in requests {
		p := plans.plan with data.accord.catalog as _catalog with input as request
		not p.allow
		p.reasons == ["the request time is missing or not an RFC3339 time"]
	}
}

test_unreadable_validity_period_denied_with_reason if {
	p := plans.plan with data.accord.catalog as _with_agreement("t1-leicester", {"valid_until": null}) with input as _request
	not p.allow
	p.reasons == ["agreement t1-leicester has no readable validity period"]
}

test_subscriptions_list_every_tier_role_of_the_stream if {
	grant := object.union(_t1_leicester, {"id": "dispute-7", "subscriber": "nottingham-city-council"})
	expired := object.union(_t1_leicester, {"valid_until": "2020-04-01T00:00:00Z"})
	catalog := object.union(_catalog, {"agreements": {"t0-leicester-expired": expired}})
	subs := plans.subscriptions with data.accord.catalog as catalog
		with input as {"stream": _stream, "grants": [grant], "revoked": ["t1-nottinghamshire"]}
	subs == [
		{"subscriber": _leicester, "role": "analyst", "purpose": "health-protection"},
		{"subscriber": _leicester, "role": "dph", "purpose": "health-protection"},
		{"subscriber": "nottingham-city-council", "role": "analyst", "purpose": "health-protection"},
		{"subscriber": "nottingham-city-council", "role": "dph", "purpose": "health-protection"},
		{"subscriber": "nottinghamshire-county-council", "role": "analyst", "purpose": "health-protection"},
		{"subscriber": "nottinghamshire-county-council", "role": "dph", "purpose": "health-protection"},
	]
}

test_subscriptions_of_another_stream if {
	subs := plans.subscriptions with data.accord.catalog as _catalog with input as {"stream": "ons.deaths"}
	subs == [{"subscriber": _leicester, "role": "ig-lead", "purpose": "health-protection"}]
}

_exempt := {"applies": false, "why": "COPI regulation 3"}

_covered := {"applies": true, "why": "section 251 support"}

test_opt_out_applies_when_a_granting_agreement_is_covered if {
	research := object.union(_t1_leicester, {"national_data_opt_out": _covered})
	copi := object.union(_t1_leicester, {"national_data_opt_out": _exempt})
	catalog := object.union(_catalog, {"agreements": {"t1-leicester": copi, "t1-research": research}})
	p := plans.plan with data.accord.catalog as catalog with input as _request
	p.opt_out == {"applies": true, "reasons": ["t1-leicester: COPI regulation 3", "t1-research: section 251 support"]}
}

test_opt_out_does_not_apply_under_an_exempt_basis_alone if {
	copi := object.union(_t1_leicester, {"national_data_opt_out": _exempt})
	p := plans.plan with data.accord.catalog as _with_agreement("t1-leicester", {"national_data_opt_out": _exempt})
		with input as _request
	p.opt_out == {"applies": false, "reasons": ["t1-leicester: COPI regulation 3"]}
	copi.national_data_opt_out == _exempt
}

test_opt_out_of_a_revoked_or_refused_agreement_does_not_apply if {
	research := object.union(_t1_leicester, {"national_data_opt_out": _covered})
	catalog := object.union(_catalog, {"agreements": {"t1-research": research}})
	p := plans.plan with data.accord.catalog as catalog with input as object.union(_request, {"revoked": ["t1-research"]})
	p.opt_out.applies == false
	refused := plans.plan with data.accord.catalog as catalog with input as object.union(_request, {"role": "nobody"})
	refused.opt_out == {"applies": false, "reasons": []}
}

test_a_grant_decides_nothing_about_the_opt_out if {
	grant := object.union(_t1_leicester, {"id": "dispute-d-1", "legal_basis": []})
	p := plans.plan with data.accord.catalog as object.union(_catalog, {"agreements": {}})
		with input as object.union(_request, {"grants": [grant]})
	p.allow
	p.opt_out == {"applies": false, "reasons": []}
}
