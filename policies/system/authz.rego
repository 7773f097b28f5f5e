# METADATA
# title: Who may use OPA's REST API
# description: |
#   OPA runs with --authentication=token --authorization=basic and asks this policy about every call it serves.
#   input.identity is the bearer token, data.system.authz.tokens maps each token's SHA-256 to its role (the bundle
#   is built with them). A reader may ask for Accord's decisions; a writer may also replace data.accord.catalog;
#   a scraper may read OPA's /metrics only.
#   Health is open; policy writes, raw data reads and every other API are refused to everyone.
package system.authz

default allow := false

# METADATA
# description: Liveness and bundle readiness, for supervisors that hold no token.
allow if {
	input.method == "GET"
	input.path == ["health"]
}

# METADATA
# description: Decisions under data.accord, for both roles.
allow if {
	_role in {"reader", "writer"}
	input.method == "POST"
	_under_accord
}

# METADATA
# description: OPA's own metrics, for Prometheus holding the scraper token (which may do nothing else).
allow if {
	_role == "scraper"
	input.method == "GET"
	input.path == ["metrics"]
}

# METADATA
# description: The catalog, which the gate keeps in step with the control topic.
allow if {
	_role == "writer"
	input.method == "PUT"
	input.path == ["v1", "data", "accord", "catalog"]
}

_role := data.system.authz.tokens[crypto.sha256(input.identity)]

_under_accord if {
	count(input.path) > 3
	array.slice(input.path, 0, 3) == ["v1", "data", "accord"]
	every segment in input.path {
		segment != ""
	}
}
