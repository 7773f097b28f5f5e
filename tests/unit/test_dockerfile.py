"""The Dockerfile is multi-stage, built on base images pinned to an exact release, runs as a non-root user, and
fetches the console's packages at the versions Accord's settings name (no builder or linter runs here)."""

from __future__ import annotations

import re
from pathlib import Path

from broker.config import AXE_CORE_VERSION, GOVUK_FRONTEND_VERSION

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _args() -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in _instructions() if op == "ARG" and "=" in arg)


def test_it_is_multi_stage_and_the_last_stage_is_the_runtime() -> None:
    stages = [arg for op, arg in _instructions() if op == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].endswith(" AS runtime")
    assert any(op == "COPY" and arg.startswith("--from=build ") for op, arg in _instructions())


def test_every_base_image_is_pinned_to_an_exact_release() -> None:
    args = _args()
    for stage in (arg.split()[0] for op, arg in _instructions() if op == "FROM"):
        image = args.get(stage.strip("${}"), stage) if stage.startswith("$") else stage
        tag = image.partition(":")[2]
        assert "@sha256:" in image or re.fullmatch(r"v?\d+\.\d+\.\d+(-[a-z0-9.-]+)?", tag), image
        assert tag.split("@")[0] != "latest", image


def test_the_runtime_runs_as_a_non_root_user() -> None:
    runtime = _instructions()
    start = max(i for i, (op, arg) in enumerate(runtime) if op == "FROM")
    users = [arg for op, arg in runtime[start:] if op == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert runtime[-1][0] in ("CMD", "ENTRYPOINT")


def test_the_console_packages_match_the_settings() -> None:
    text = DOCKERFILE.read_text()
    assert f"govuk-frontend@{GOVUK_FRONTEND_VERSION}" in text
    assert f"axe-core@{AXE_CORE_VERSION}" in text
