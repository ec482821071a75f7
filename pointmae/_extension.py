"""Loads the compiled extension pointmae._C and explains, in plain words, why it did not load."""
import torch

REBUILD_HINT = ("Rebuild it against the torch you are running with:\n"
                "    pip install --no-build-isolation -e .        (from the pointmae checkout)\n"
                "or run ./run.sh test, which sets up a virtual environment and builds everything.")


def load_extension():
    try:
        from pointmae import _build_info
    except ImportError:
        raise ImportError("pointmae: the compiled extension pointmae._C has not been built. " + REBUILD_HINT) from None
    if _build_info.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"pointmae: the compiled extension pointmae._C was built against torch {_build_info.TORCH_VERSION}, "
            f"but torch {torch.__version__} is installed. " + REBUILD_HINT)
    try:
        from pointmae import _C  # noqa: F401  (importing registers torch.ops.pointmae.*)
    except ImportError as e:
        raise ImportError(f"pointmae: the compiled extension pointmae._C failed to load ({e}). "
                          + REBUILD_HINT) from e
    return _build_info.WITH_CUDA


WITH_CUDA = load_extension()
