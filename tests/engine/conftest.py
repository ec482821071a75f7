import pytest

import engine_tiny


@pytest.fixture(autouse=True)
def tiny_registered():
    """The tiny test model / dataset in the plain factory dicts (idempotent)."""
    engine_tiny.register()
