"""Runs a real Kafka broker and a real OPA server on loopback for development, demos and tests."""
