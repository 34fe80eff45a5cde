"""Shared pytest fixtures: project paths and the real public data beside the project."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# Make the workflow's Python package importable as `il6axis`.
sys.path.insert(0, str(PROJECT_ROOT / "workflow"))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory of real public files (read-only). Skips locally when absent; fails in CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{SHARED_DATA} is missing but CI=true: real-data tests must run in CI")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
