"""A drill's synthetic rows of one area lie in no other area it publishes for: T5's rows are a trust's, in every area
the trust serves, so the drill asks for each area's rows avoiding the other's (drill_records.py)."""

from __future__ import annotations

from collections.abc import Sequence

from tests.unit.drill_fakes import FakeData, Row
from tests.unit.test_drill_streams import drilled, leicester_only


class Recording(FakeData):
    """Records the areas each batch of synthetic rows was asked to avoid."""

    def __init__(self) -> None:
        super().__init__(leicester_only)
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def synthetic(self, stream: str, area: str, upper_tier: str, count: int, prefix: str, seed: int,
                  avoiding: Sequence[str] = ()) -> list[Row] | None:
        self.asked.append((area, tuple(avoiding)))
        return super().synthetic(stream, area, upper_tier, count, prefix, seed, avoiding)


def test_each_areas_rows_are_asked_for_avoiding_the_other_area() -> None:
    data = Recording()
    _, checks, drills = drilled(data)
    assert checks["approval-to-first-record"].verdict == "pass", checks["approval-to-first-record"].reason
    (drill,) = drills
    assert drill.records is not None and drill.records.elsewhere is not None
    own, other = drill.records.area, drill.records.elsewhere
    assert own != other
    assert set(data.asked) == {(own, (other,)), (other, (own,))}
