import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

import pointmae  # noqa: F401  (loads the extension; a broken build fails collection loudly)

# Hypothesis: no deadline (2-core CI machines are noisy), a bounded number of examples, and
# derandomised in CI so that a failure reproduces on the next run.
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Every device test runs on the CPU, and on CUDA when a GPU is present (skipped otherwise)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    return torch.device(request.param)


def pytest_collection_modifyitems(config, items):
    """Every test that takes `cuda_device` needs a GPU: mark it `cuda`, so that `pytest -m cuda` (the
    documented way to run the GPU tests) selects it. Most CUDA tests take the fixture without the
    marker, and `-m cuda` used to deselect them: the GPU run would have skipped most CUDA kernels."""
    for item in items:
        if "cuda_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture
def cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data beside the checkout (real KITTI / nuScenes / Waymo / ModelNet40 samples)."""
    root = Path(os.environ.get("POINTMAE_SHARED_DATA", SHARED_DATA))
    if not root.is_dir():
        pytest.skip(f"sample data not found at {root} (set POINTMAE_SHARED_DATA)")
    return root
