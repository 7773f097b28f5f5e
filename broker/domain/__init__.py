"""Pure domain logic: no Kafka, OPA, HTTP or clock imports; inputs in, decisions out."""
