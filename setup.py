"""Build of pointmae and its one compiled extension, pointmae._C.

CPU kernels are always built. CUDA kernels are built when FORCE_CUDA=1, or when torch has CUDA, a GPU
is visible and nvcc is found. Nothing has to be exported by hand:

- CUDA_HOME: taken from the environment, else from the real toolkit behind `nvcc` on PATH (nvcc may be
  a wrapper script; `nvcc --dryrun` prints the toolkit directory on its `#$ TOP=` line).
- CUDA headers that a pip-installed torch ships (site-packages/nvidia/cu*/include) are added to the
  include path, since a bare toolkit may lack some that torch's headers include.
- TORCH_CUDA_ARCH_LIST defaults to Ampere through Hopper plus PTX for newer GPUs.

Build without build isolation so the extension is compiled against the torch you run with:
    pip install --no-build-isolation -e .
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


def _nvcc_toolkit_dir():
    """The toolkit directory of the real nvcc on PATH, or None."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"#\$ TOP=(.*)", line.strip())
        if m and os.path.isdir(m.group(1)):
            return os.path.abspath(m.group(1))
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


# torch.utils.cpp_extension reads CUDA_HOME when it is imported: set it first.
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    _toolkit = _nvcc_toolkit_dir()
    if _toolkit is not None:
        os.environ["CUDA_HOME"] = _toolkit

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if force:
        if CUDA_HOME is None:
            sys.exit("setup.py: FORCE_CUDA=1 but no CUDA toolkit was found: put nvcc on PATH or set CUDA_HOME.")
        if torch.version.cuda is None:
            sys.exit(f"setup.py: FORCE_CUDA=1 but the installed torch {torch.__version__} is a CPU build; "
                     "install a CUDA build of torch.")
        return True
    return torch.version.cuda is not None and torch.cuda.is_available() and CUDA_HOME is not None


def _pip_cuda_include_dirs():
    """Header folders of the nvidia-* wheels that a CUDA build of torch depends on."""
    dirs = []
    for site in {os.path.dirname(os.path.dirname(torch.__file__))}:
        dirs += sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
        dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    return [d for d in dirs if os.path.isdir(d)]


def _write_build_info(with_cuda):
    # Read at import time by pointmae/_extension.py to detect an extension built against another torch.
    path = os.path.join(ROOT, "pointmae", "_build_info.py")
    text = ("# Written by setup.py at build time. Do not edit.\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"WITH_CUDA = {with_cuda!r}\n")
    with open(path, "w") as f:
        f.write(text)


def make_extension():
    with_cuda = _want_cuda()
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cxx_flags = ["-O3", "-fopenmp"]
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra_link_args = ["-fopenmp"]
    if os.environ.get("POINTMAE_DEBUG") == "1":
        cxx_flags = ["-O0", "-g", "-fopenmp"]
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
        define_macros.append(("WITH_CUDA", None))
        include_dirs += _pip_cuda_include_dirs()
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        extension = CUDAExtension
        extra_compile_args = {"cxx": cxx_flags, "nvcc": nvcc_flags}
    else:
        extension = CppExtension
        extra_compile_args = {"cxx": cxx_flags}
    _write_build_info(with_cuda)
    print(f"setup.py: building pointmae._C with CUDA={with_cuda} "
          f"(CUDA_HOME={CUDA_HOME}, TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')}), "
          f"torch {torch.__version__}, {len(sources)} sources")
    return extension(
        name="pointmae._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    )


setup(
    name="pointmae",
    version="0.1.0",
    description="Self-supervised pre-training on point clouds and LiDAR, with C++/CUDA kernels",
    packages=find_packages(include=["pointmae", "pointmae.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
