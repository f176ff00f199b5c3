"""The ``uri`` fixture: one fresh directory per backend (local disk, memory://, S3 on moto)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["local", "memory", "s3"])
def uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "d")
    if request.param == "memory":
        return f"memory://distrec-{tmp_path.name}"
    return request.getfixturevalue("s3_uri")
