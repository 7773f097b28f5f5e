"""HTTP interfaces (FastAPI): the Confluent-compatible schema registry and Accord's own API."""
