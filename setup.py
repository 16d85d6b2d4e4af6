"""Builds nptm._C: CPU kernels (OpenMP) always, CUDA kernels when nvcc and a CUDA build of torch exist."""
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess


def _find_cuda_home():
    """nvcc may sit in /usr/local/bin while the toolkit (libcudart) lives in /usr/local/cuda."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or not shutil.which("nvcc"):
        return
    for home in (os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("nvcc")))), "/usr/local/cuda"):
        if glob.glob(os.path.join(home, "lib*", "libcudart.so")):
            os.environ["CUDA_HOME"] = home
            return


_find_cuda_home()

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")
RUNTIME_DEPENDENCIES = ["torchvision", "numpy", "scikit-learn", "tqdm", "matplotlib", "pyyaml"]
# nptm._C only loads beside the torch it was compiled against: the wheel pins it, as torchvision's do.
TORCH_PIN = f"torch==={importlib.metadata.version('torch')}"  # exact: not 2.13.0+cpu for 2.13.0


def nvcc_older_than_torch():
    """nvcc's CUDA release when it is older than the one torch was built with (torch's headers then clash)."""
    try:
        out = subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    found = re.search(r"release (\d+)\.(\d+)", out)
    nvcc = tuple(int(x) for x in found.groups()) if found else None
    return nvcc if nvcc and nvcc < tuple(int(x) for x in torch.version.cuda.split(".")[:2]) else None


def cuda_unavailable_reason():
    if os.environ.get("NPTM_CPU_ONLY") == "1":
        return "NPTM_CPU_ONLY=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if CUDA_HOME is None:
        return "nvcc was not found (set CUDA_HOME)"
    old = nvcc_older_than_torch()
    if old:
        return f"nvcc {old[0]}.{old[1]} is older than the CUDA {torch.version.cuda} of torch {torch.__version__}"
    return None


def write_build_info(cuda_kernels):
    """nptm/_build_info.py: what nptm.ops checks before loading the extension."""
    with open(os.path.join(ROOT, "nptm", "_build_info.py"), "w") as f:
        f.write(f'"""Written by setup.py."""\nTORCH_VERSION = {torch.__version__!r}\nCUDA_KERNELS = {cuda_kernels!r}\n')


def nvidia_wheel_includes():
    """Torch's CUDA headers include cusparse.h & co, shipped by the nvidia-* wheels, not by nvcc."""
    dirs = []
    for base in {os.path.dirname(os.path.dirname(torch.__file__))}:
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(d for d in dirs if os.path.isdir(d))


def extension():
    # ops/emu: the CUDA kernels compiled for the CPU emulator (test-only ops nptm::_emu_*), in every build.
    sources = sorted(glob.glob(f"{CSRC}/*.cpp") + glob.glob(f"{CSRC}/ops/*.cpp") + glob.glob(f"{CSRC}/ops/cpu/*.cpp") + glob.glob(f"{CSRC}/ops/emu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
    reason = cuda_unavailable_reason()
    if reason is not None:
        print(f"nptm: building CPU kernels only ({reason})", flush=True)
        write_build_info(False)
        return CppExtension("nptm._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # No GPU to detect: build for A100 and H100/H200, plus PTX for newer GPUs.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    write_build_info(True)
    sources += sorted(glob.glob(f"{CSRC}/ops/cuda/*.cu"))
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-DNPTM_WITH_CUDA"]
    return CUDAExtension(
        "nptm._C",
        sources,
        include_dirs=nvidia_wheel_includes(),
        define_macros=[("NPTM_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


setup(
    install_requires=[TORCH_PIN, *RUNTIME_DEPENDENCIES],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
