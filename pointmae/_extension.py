"""Loads the compiled kernels and explains, in plain words, why they did not load.

Normally the kernels come from the Python extension pointmae._C built by setup.py. When the
environment variable POINTMAE_LIBRARY names a shared library (the CMake build, e.g. the sanitizer
build that tools/asan_tests.sh makes), that library is loaded instead.
"""
import os

import torch

REBUILD_HINT = ("Rebuild it against the torch you are running with:\n"
                "    pip install --no-build-isolation -e .        (from the pointmae checkout)\n"
                "or run ./run.sh setup, which sets up a virtual environment and builds everything.")


def _load_library(path):
    if not os.path.isfile(path):
        raise ImportError(f"pointmae: POINTMAE_LIBRARY={path!r} does not exist; build it with CMake "
                          "(see CMakeLists.txt) or unset POINTMAE_LIBRARY.")
    torch.ops.load_library(path)
    return torch.cuda.is_available() and _has_kernel("fps", "CUDA")


def _has_kernel(op, dispatch_key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"pointmae::{op}", dispatch_key)


def load_extension(build_info=None):
    """Loads the kernels; returns whether they include CUDA kernels. Raises ImportError with the
    reason and the rebuild command when the extension is missing or was built for another torch."""
    library = os.environ.get("POINTMAE_LIBRARY")
    if library:
        return _load_library(library)
    if build_info is None:
        try:
            from pointmae import _build_info as build_info
        except ImportError:
            raise ImportError("pointmae: the compiled extension pointmae._C has not been built. "
                              + REBUILD_HINT) from None
    if build_info.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"pointmae: the compiled extension pointmae._C was built against torch {build_info.TORCH_VERSION}, "
            f"but torch {torch.__version__} is installed. " + REBUILD_HINT)
    try:
        from pointmae import _C  # noqa: F401  (importing registers torch.ops.pointmae.*)
    except ImportError as e:
        raise ImportError(f"pointmae: the compiled extension pointmae._C failed to load ({e}). "
                          + REBUILD_HINT) from e
    return build_info.WITH_CUDA


WITH_CUDA = load_extension()
