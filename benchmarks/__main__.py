"""Placeholder until the policy gate exists: says so, in the JSON shape later benchmarks will use."""

import json

print(json.dumps({
    "scenario": "none",
    "status": "not-implemented",
    "message": "No benchmarks yet: they measure the policy gate, which does not exist yet.",
}))
