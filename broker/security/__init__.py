"""Credentials and keys: API tokens, signing keys, OPA tokens and bundles, Kafka identities, secrets on disk."""
