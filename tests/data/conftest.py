import os
from pathlib import Path

import pytest


def _find_shared_data() -> Path | None:
    """POINTMAE_SHARED_DATA, else the first `shared/data` in a parent of the checkout (the checkout
    may be a worktree nested one level deeper than the main one)."""
    if os.environ.get("POINTMAE_SHARED_DATA"):
        return Path(os.environ["POINTMAE_SHARED_DATA"])
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data():
    root = _find_shared_data()
    if root is None or not root.is_dir():
        pytest.skip("sample data (shared/data) not found; set POINTMAE_SHARED_DATA")
    return root
