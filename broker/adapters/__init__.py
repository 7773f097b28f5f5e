"""The only code that imports kafka, opa_client, fastapi and prometheus_client."""
