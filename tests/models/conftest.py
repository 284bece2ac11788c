"""A warehouse built into the blue colour and published, shared by the module's tests."""

from __future__ import annotations

import pytest

from loopline.dbt import run_dbt
from tests.conftest import copy_company


@pytest.fixture(scope="module")
def published_blue(built_warehouse, tmp_path_factory):
    """The session's company built into blue and published: every row it holds is vouched
    for. A test copies it before changing anything (`copy_company`)."""
    from loopline.publish import audit_and_publish

    settings = copy_company(built_warehouse[0], tmp_path_factory.mktemp("blue") / "data")
    run_dbt(settings, ["build"], colour="blue")
    audit_and_publish(settings, "blue")
    return settings
