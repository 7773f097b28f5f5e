"""What goes into the signed policy bundle: non-test modules, their packages as roots, never the catalog's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.security.bundles import bundle_files, revision, roots
from tests.conftest import POLICIES


def _policies(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_shipped_policies_bundle_without_tests_under_their_packages() -> None:
    files = bundle_files(POLICIES)
    assert "plans/plans.rego" in files and not any(name.endswith("_test.rego") for name in files)
    assert {"accord/plans", "accord/authz"} <= set(roots(files)) and "accord/catalog" not in roots(files)


def test_nested_packages_share_their_outer_root(tmp_path: Path) -> None:
    files = bundle_files(_policies(tmp_path, {"a/a.rego": "package accord.plans\n",
                                              "a/b/b.rego": "package accord.plans.helpers\n",
                                              "a/data.json": "{}"}))
    assert roots(files) == ["a", "accord/plans"]


def test_a_package_over_the_catalog_is_refused(tmp_path: Path) -> None:
    files = bundle_files(_policies(tmp_path, {"x.rego": "package accord\n"}))
    with pytest.raises(ConfigError, match="accord/catalog"):
        roots(files)


def test_any_change_to_a_policy_changes_the_revision(tmp_path: Path) -> None:
    first = revision(bundle_files(_policies(tmp_path, {"p/p.rego": "package accord.p\n"})))
    assert revision(bundle_files(tmp_path)) == first
    (tmp_path / "p/p_test.rego").write_text("package accord.p_test\n")
    assert revision(bundle_files(tmp_path)) == first  # tests are not in the bundle
    (tmp_path / "p/p.rego").write_text("package accord.p\n\nx := 1\n")
    assert revision(bundle_files(tmp_path)) != first
