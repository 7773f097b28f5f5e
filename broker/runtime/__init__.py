"""Composition roots: each Accord process built from Settings, the only place adapters are wired to services."""
