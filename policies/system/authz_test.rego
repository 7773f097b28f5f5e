package system.authz_test

import data.system.authz

tokens := {
	crypto.sha256("r-token"): "reader",
	crypto.sha256("w-token"): "writer",
	crypto.sha256("s-token"): "scraper",
}

_allowed(method, path, token) if {
	authz.allow with input as {"method": method, "path": path, "identity": token}
		with data.system.authz.tokens as tokens
}

_allowed_anonymous(method, path) if {
	authz.allow with input as {"method": method, "path": path}
		with data.system.authz.tokens as tokens
}

test_health_is_open if {
	_allowed_anonymous("GET", ["health"])
}

test_nothing_else_is_open if {
	not _allowed_anonymous("POST", ["v1", "data", "accord", "authz", "decision"])
	not _allowed_anonymous("GET", ["metrics"])
	not _allowed_anonymous("PUT", ["v1", "data", "accord", "catalog"])
}

test_both_roles_ask_for_decisions if {
	_allowed("POST", ["v1", "data", "accord", "authz", "decision"], "r-token")
	_allowed("POST", ["v1", "data", "accord", "plans", "plan"], "w-token")
}

test_only_the_writer_replaces_the_catalog if {
	_allowed("PUT", ["v1", "data", "accord", "catalog"], "w-token")
	not _allowed("PUT", ["v1", "data", "accord", "catalog"], "r-token")
}

test_an_unknown_token_gets_nothing if {
	not _allowed("POST", ["v1", "data", "accord", "authz", "decision"], "guess")
	not _allowed("GET", ["v1", "data", "accord", "catalog"], "")
}

test_no_policy_writes_raw_reads_or_other_data if {
	not _allowed("PUT", ["v1", "policies", "other"], "w-token")
	not _allowed("DELETE", ["v1", "policies", "authz", "authz.rego"], "w-token")
	not _allowed("GET", ["v1", "data"], "w-token")
	not _allowed("GET", ["v1", "data", "system", "authz", "tokens"], "w-token")
	not _allowed("POST", ["v1", "data", "system", "authz", "tokens"], "w-token")
	not _allowed("PUT", ["v1", "data", "accord", "catalog", "revision"], "w-token")
	not _allowed("PATCH", ["v1", "data", "accord", "catalog"], "w-token")
	not _allowed("PUT", ["v1", "data", "accord", "plans"], "w-token")
	not _allowed("POST", ["v1", "data", "accord"], "w-token")
	not _allowed("POST", ["v1", "data", "accord", ""], "r-token")
	not _allowed("POST", ["v1", "query"], "r-token")
	not _allowed("GET", ["v1", "config"], "w-token")
}

test_the_scraper_reads_metrics_and_nothing_else if {
	_allowed("GET", ["metrics"], "s-token")
	not _allowed("GET", ["metrics"], "r-token")
	not _allowed("POST", ["v1", "data", "accord", "authz", "decision"], "s-token")
	not _allowed("PUT", ["v1", "data", "accord", "catalog"], "s-token")
	not _allowed("GET", ["v1", "data"], "s-token")
}
