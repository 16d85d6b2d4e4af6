"""ThreadSanitizer run of the emulated CUDA kernels on a few cases, checked against nptm.ops.reference.

    python csrc/ops/emu/tsan_check.py [build_dir]   (builds csrc/ops/*.cpp + csrc/ops/emu/*.cpp with
    -fsanitize=thread, then reruns itself under LD_PRELOAD=libtsan; exit status 1 on any TSan report)
"""
import glob
import importlib.util
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = sys.argv[1] if len(sys.argv) > 1 else "/tmp/nptm-tsan"


def build():
    from torch.utils.cpp_extension import load

    srcs = sorted(glob.glob(f"{ROOT}/csrc/ops/*.cpp") + glob.glob(f"{ROOT}/csrc/ops/emu/*.cpp"))
    os.makedirs(BUILD, exist_ok=True)
    try:  # loading needs the TSan runtime preloaded: done by the rerun below
        load("nptm_tsan", srcs, extra_cflags=["-O1", "-g", "-fsanitize=thread"], extra_ldflags=["-fsanitize=thread"],
             build_directory=BUILD, is_python_module=False)
    except OSError:
        pass
    libtsan = subprocess.run(["gcc", "-print-file-name=libtsan.so"], capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, LD_PRELOAD=os.path.realpath(libtsan), TSAN_OPTIONS="exitcode=1 report_signal_unsafe=0", NPTM_TSAN_RUN="1")
    sys.exit(subprocess.run([sys.executable, __file__, BUILD], env=env).returncode)


def run():
    torch.set_num_threads(1)
    torch.ops.load_library(f"{BUILD}/nptm_tsan.so")  # nptm._C is not imported: it registers the same ops
    spec = importlib.util.spec_from_file_location("reference", f"{ROOT}/nptm/ops/reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    g = torch.Generator().manual_seed(0)
    scores = [torch.randint(-5, 6, (700,), generator=g).float(), torch.randn(3, 400, generator=g).half().float()]
    for k in (1, 350, 1000):
        got = torch.ops.nptm._emu_global_magnitude_masks(scores, [], k, True)
        assert all(torch.equal(a, b) for a, b in zip(got, reference.global_magnitude_masks(scores, [], k, True)))
    big = [torch.randn(30, 400, generator=g), torch.randn(9000, generator=g)]  # >= 2^14 entries: the sample select
    got = torch.ops.nptm._emu_global_magnitude_masks(big, [], 7000, False)
    assert torch.ops.nptm._emu_global_magnitude_masks_last_path() == "sample"
    assert all(torch.equal(a, b) for a, b in zip(got, reference.global_magnitude_masks(big, [], 7000, False)))
    t = [torch.randn(1500, generator=g), torch.randn(1500, generator=g).double()]
    m = [torch.rand(1500, generator=g) < 0.5 for _ in t]
    e = [x.clone() for x in t]
    torch.ops.nptm._emu_apply_masks_(t + [t[0]], m + [m[1]])
    reference.apply_masks_(e + [e[0]], m + [m[1]])
    assert all(torch.equal(a, b) for a, b in zip(t, e))
    x, idx = torch.randn(6, 50, 7, generator=g), torch.tensor([4, 0, 0, 49, 10])
    assert torch.equal(torch.ops.nptm._emu_gather_channels([x], [1], [idx])[0], x.index_select(1, idx))
    print("tsan: emulated kernels ran, results match the reference")


if __name__ == "__main__":
    run() if os.environ.get("NPTM_TSAN_RUN") else build()
