"""`POST /deliveries/{stream}/receipts`: a subscriber acknowledges a range of its own deliveries it has durably
stored, signed with its body's registered Ed25519 key (services/receipts.py checks it; docs/security.md says how
to build one)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from broker.api.auth import caller
from broker.domain.receipts import Claim, ReceiptError
from broker.errors import ServiceError
from broker.services.receipts import DeliveryReceipts

MAX_OFFSET = 2**63 - 1


class ReceiptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=400, description="your delivery topic, deliver.<body>.<role>.<stream>")
    partition: int = Field(ge=0, le=2**31 - 1)
    first_offset: int = Field(ge=0, le=MAX_OFFSET)
    last_offset: int = Field(ge=0, le=MAX_OFFSET, description="inclusive")
    records_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the range's records")
    key_id: str = Field(min_length=1, max_length=64, description="your registered receipt key's fingerprint")
    signature: str = Field(min_length=1, max_length=200, description="base64 Ed25519 signature of the canonical form")

    def claim(self) -> Claim:
        return Claim(self.topic, self.partition, self.first_offset, self.last_offset, self.records_digest,
                     self.key_id)


def add_receipt_routes(app: FastAPI, receipts: DeliveryReceipts) -> None:
    @app.exception_handler(ReceiptError)
    async def refused(_: Request, exc: ReceiptError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.post("/deliveries/{stream}/receipts", status_code=201, responses={
        400: {"description": "not a range"}, 403: {"description": "not your own delivery topic, or its right ended"},
        409: {"description": "the records in the range hash to something else"},
        416: {"description": "the range is beyond what was delivered"},
        422: {"description": "malformed, or an unknown or retired key, or a signature that does not verify"},
        503: {"description": "Kafka cannot be read now; retry later"}})
    def receipt(stream: str, body: ReceiptIn, request: Request) -> Any:
        """Acknowledge records [first_offset, last_offset] of one partition of your own delivery topic of `stream`:
        the server checks the signature with your body's registered key and recomputes the SHA-256 from the
        committed records, then puts the receipt on the audit trail. Sending the same receipt again is harmless."""
        identity = caller(request)
        actor = {"body": identity.body, "role": identity.role, "person": identity.person}
        try:
            return {"accepted": True, "receipt": receipts.accept(actor, stream, body.claim(), body.signature)}
        except ServiceError:
            return JSONResponse({"error": "receipts cannot be checked now; retry later"}, status_code=503,
                                headers={"Retry-After": "5"})
