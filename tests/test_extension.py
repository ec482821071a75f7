"""The build itself: every op in the catalogue has its kernels, and a broken build says so clearly."""
import os
import subprocess
import sys
import types

import pytest
import torch

import pointmae
from pointmae import _extension


def catalogue_ops():
    """Every op schema registered under the `pointmae` namespace (csrc/pointmae.cpp)."""
    names = [s.name for s in torch._C._jit_get_all_schemas() if s.name.startswith("pointmae::")]
    return sorted(set(names))


def test_catalogue_is_not_empty():
    assert len(catalogue_ops()) >= 10, catalogue_ops()


@pytest.mark.parametrize("op", catalogue_ops())
def test_every_op_has_a_cpu_kernel(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), f"{op} has no CPU kernel"


@pytest.mark.skipif(not pointmae.WITH_CUDA, reason="this build has no CUDA kernels (set FORCE_CUDA=1)")
@pytest.mark.parametrize("op", catalogue_ops())
def test_every_op_has_a_cuda_kernel(op):
    # CI builds with FORCE_CUDA=1: a .cu file that drops out of the build fails here.
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), f"{op} has no CUDA kernel"


@pytest.mark.skipif(os.environ.get("FORCE_CUDA") != "1", reason="only a FORCE_CUDA=1 build (CI) must have CUDA kernels")
def test_ci_build_has_cuda_kernels():
    assert pointmae.WITH_CUDA, "FORCE_CUDA=1 but pointmae._C was built without CUDA kernels"


def test_torch_version_mismatch_is_explained(monkeypatch):
    monkeypatch.delenv("POINTMAE_LIBRARY", raising=False)
    fake = types.SimpleNamespace(TORCH_VERSION="1.0.0", WITH_CUDA=False)
    with pytest.raises(ImportError, match=r"(?s)built against torch 1\.0\.0.*pip install --no-build-isolation"):
        _extension.load_extension(build_info=fake)


def test_missing_library_is_explained(tmp_path):
    code = "import pointmae"
    env = {"POINTMAE_LIBRARY": str(tmp_path / "nope.so"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.returncode != 0
    assert "POINTMAE_LIBRARY" in out.stderr and "does not exist" in out.stderr
