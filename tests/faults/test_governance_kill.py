"""kill -9 of the governance service mid-dispute, kept down past the dispute's first deadline: restarted by the
supervisor, it fires every deadline (the one that passed while it was down as of when it passed), so the dispute
still ends by its decisive default at the ladder's bound from when it was raised."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from broker.domain.disputes import parse_stamp
from tests.conftest import bearer
from tests.faults.support import TIER_S, FaultStack, wait_for
from tests.integration.gate_support import T1

DOWN_S = TIER_S + 5  # past the first tier's deadline


def _dispute(stack: FaultStack, ident: str, dph: dict[str, str]) -> dict[str, Any] | None:
    try:
        answer = httpx.get(f"{stack.endpoints.governance_url}/disputes/{ident}", headers=dph, timeout=10)
    except httpx.TransportError:
        return None  # down, or not answering yet
    return dict(answer.json()) if answer.status_code == 200 else None


def test_deadlines_fire_after_a_restart_within_the_ladders_bound(stack: FaultStack,
                                                                 figure: Callable[..., None]) -> None:
    dph = bearer("leicester-city-council", "dph", "Director of Public Health")
    request = {"kind": "restriction", "stream": T1, "role": "dph", "purpose": "health-protection",
               "fields": ["occupation"], "justification": f"Occupation finds workplace clusters ({uuid.uuid4().hex})."}
    raised = httpx.post(f"{stack.endpoints.governance_url}/disputes", json=request, headers=dph, timeout=30)
    assert raised.status_code == 201, raised.text
    ident = str(raised.json()["id"])
    held = stack.accord("local", "hold", "governance", "--seconds", str(DOWN_S))
    assert held.returncode == 0, held.stdout + held.stderr
    pid, killed = stack.kill("governance")
    killed_wall = time.time()
    back = stack.restarted("governance", pid)
    answering = wait_for(lambda: _dispute(stack, ident, dph) is not None, "the governance service to answer")
    decided = wait_for(lambda: (_dispute(stack, ident, dph) or {}).get("decided_at") is not None,
                       "the dispute to end by its decisive default", timeout_s=3 * TIER_S + 120, every_s=0.5)
    dispute = _dispute(stack, ident, dph)
    assert dispute is not None
    timeline = dispute["timeline"]
    opened = [e for e in timeline if e["type"] == "tier-opened"]
    [ended] = [e for e in timeline if e["type"] == "defaulted"]
    assert [e["data"]["tier"] for e in opened] == [0, 1, 2], timeline
    first_opened = parse_stamp(opened[0]["at"])
    deadlines = [parse_stamp(e["data"]["deadline"]) for e in opened]
    step = dt.timedelta(seconds=TIER_S)
    # Each tier's deadline runs from the one before (not from when a late service got round to it) ...
    assert deadlines == [first_opened + step, first_opened + 2 * step, first_opened + 3 * step], timeline
    # ... and every deadline fired, after it passed: two escalations and the decisive default at the bound.
    fired = [parse_stamp(e["at"]) for e in (*opened[1:], ended)]
    assert all(at >= due for at, due in zip(fired, deadlines, strict=True)), timeline
    assert parse_stamp(ended["data"]["due_at"]) == first_opened + 3 * step, ended
    assert ended["data"]["outcome"] == "refused", ended
    first_due_wall = deadlines[0].timestamp()
    figure(ladder_bound_s=3 * TIER_S, governance_down_s=round(back - killed, 1),
           answering_after_kill_s=round(answering - killed, 1),
           first_deadline_passed_while_down=killed_wall < first_due_wall < killed_wall + (back - killed),
           lateness_s=[round((at - due).total_seconds(), 1) for at, due in zip(fired, deadlines, strict=True)],
           decided_after_raised_s=round((parse_stamp(ended["at"]) - first_opened).total_seconds(), 1),
           due_at_after_raised_s=(parse_stamp(ended["data"]["due_at"]) - first_opened).total_seconds(),
           decided_seen_after_kill_s=round(decided - killed, 1))
