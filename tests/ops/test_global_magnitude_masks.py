"""global_magnitude_masks (sample select + radix fallback kernels) against nptm.ops.reference, bit for bit."""
import functools
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nptm import ops
from nptm.ops import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
MODES = ["normal", "ties", "constant", "zeros", "specials", "ulps", "wide"]
SPECIALS = [0.0, -0.0, float("inf"), float("-inf"), 1.0, -1.0, 0.5]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def values(shape, mode, dtype, gen):
    """Scores of one tensor: smooth, heavily tied, all equal, mostly zeros, +-0/+-Inf, adjacent floats, or huge range."""
    n = torch.Size(shape).numel()
    if mode == "normal":
        v = torch.randn(n, generator=gen, dtype=torch.float64)
    elif mode == "ties":
        v = torch.randint(-3, 4, (n,), generator=gen).double()
    elif mode == "constant":
        v = torch.full((n,), -2.5, dtype=torch.float64)
    elif mode == "zeros":
        v = torch.randn(n, generator=gen, dtype=torch.float64) * (torch.rand(n, generator=gen) < 0.1)
        v[torch.rand(n, generator=gen) < 0.5] = -0.0
    elif mode == "specials":
        v = torch.tensor(SPECIALS, dtype=torch.float64)[torch.randint(len(SPECIALS), (n,), generator=gen)]
    elif mode == "ulps":  # neighbours differing in the lowest bits: every radix digit matters
        eps = torch.finfo(dtype).eps
        v = (1 + torch.randint(0, 9, (n,), generator=gen).to(dtype) * eps) * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(dtype)
        return v.reshape(shape)
    else:  # "wide": under/overflows to 0/subnormals/Inf in the narrow dtypes
        v = torch.randn(n, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-320, 300, (n,), generator=gen).double()
    return v.to(dtype).reshape(shape)


def make_mask(shape, kind, gen):
    if kind == "none":
        return None
    alive = torch.rand(shape, generator=gen) < 0.7
    if kind == "bool":
        return alive
    if kind == "uint8":  # any nonzero byte means alive
        return alive.to(torch.uint8) * torch.tensor([1, 7, 255], dtype=torch.uint8)[torch.randint(3, shape, generator=gen)]
    return alive.reshape(-1)  # "flat": same numel, other shape


def layout(t, kind):
    """The same values through a non-contiguous view when asked."""
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if kind == "sliced":
        return torch.stack([t, torch.full_like(t, float("nan"))], dim=-1)[..., 0]  # NaNs in the gaps must not be read
    return t


@st.composite
def problems(draw, with_nan=False, mixed=False):
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    dtype = draw(st.sampled_from(DTYPES))
    shapes = draw(st.lists(st.lists(st.integers(0, 9), max_size=3), min_size=1, max_size=6))  # [] has no device to dispatch on
    mask_kind = draw(st.sampled_from(["none", "bool", "uint8", "flat"]))
    scores, masks = [], []
    for shape in shapes:
        t = values(shape, draw(st.sampled_from(MODES)), draw(st.sampled_from(DTYPES)) if mixed else dtype, gen)
        if with_nan and t.numel() and draw(st.booleans()):
            t.view(-1)[torch.randint(t.numel(), (1,), generator=gen)] = float("nan")
        scores.append(layout(t, draw(st.sampled_from(["contiguous", "transposed", "sliced"]))))
        masks.append(make_mask(shape, mask_kind, gen))
    masks = [] if mask_kind == "none" else masks
    alive = sum(int(m.count_nonzero()) for m in masks) if masks else sum(t.numel() for t in scores)
    k = draw(st.sampled_from([0, alive, draw(st.integers(0, alive)), draw(st.integers(0, alive + 2))]))
    return scores, masks, k, draw(st.booleans())


def to(ts, device):
    return [t.to(device) for t in ts]


def check_against_reference(scores, masks, k, use_abs, device):
    """The op on `device` must return exactly the reference masks, or raise the reference's ValueError."""
    try:
        expected = reference.global_magnitude_masks(scores, masks, k, use_abs)
    except ValueError as e:
        with pytest.raises(ValueError, match=re.escape(str(e).split(": ", 1)[1])):
            torch.ops.nptm.global_magnitude_masks(to(scores, device), to(masks, device), k, use_abs)
        return
    got = torch.ops.nptm.global_magnitude_masks(to(scores, device), to(masks, device), k, use_abs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == torch.bool and g.is_contiguous() and g.device.type == device
        assert torch.equal(g.cpu(), e)


@HYPOTHESIS
@given(problem=problems())
def test_matches_reference(device, problem):
    check_against_reference(*problem, device)


@HYPOTHESIS
@given(problem=problems(with_nan=True))
def test_nan_raises_only_when_alive(device, problem):
    check_against_reference(*problem, device)


@HYPOTHESIS
@given(problem=problems(with_nan=True, mixed=True))
def test_mixed_dtypes_match_reference(device, problem):
    """Float dtypes mixed in one call compare exactly (the reference compares in float64)."""
    check_against_reference(*problem, device)


def check_fraction(scores, masks, fraction, use_abs, device):
    """fraction mode (k=-1): the kernel counts the alive entries and prunes Python's round(fraction * alive)."""
    alive = sum(int(m.count_nonzero()) for m in masks) if masks else sum(t.numel() for t in scores)
    expected = reference.global_magnitude_masks(scores, masks, round(fraction * alive), use_abs)
    got = torch.ops.nptm.global_magnitude_masks(to(scores, device), to(masks, device), -1, use_abs, fraction)
    assert len(got) == len(expected) and all(torch.equal(g.cpu(), e) for g, e in zip(got, expected))


@HYPOTHESIS
@given(problem=problems(), fraction=st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)))
def test_fraction_matches_reference(device, problem, fraction):
    scores, masks, _, use_abs = problem
    check_fraction(scores, masks, fraction, use_abs, device)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fraction_on_the_sample_path(device, emulated, dtype):
    """Large enough for the sample select; alive counts chosen so that fraction * alive ends in .5 (round half to even)."""
    gen = torch.Generator().manual_seed(21 + DTYPES.index(dtype))
    n = 20_000 if emulated else 150_000  # emulated: >= 2^14 entries, its sample select's minimum
    scores = [values((n // 3,), "normal", dtype, gen), values((n - n // 3,), "ties", dtype, gen)]
    for keep in (0.9, 0.5, 0.1):
        masks = [torch.rand(s.shape, generator=gen) < keep for s in scores]
        alive = sum(int(m.sum()) for m in masks)
        for fraction in (0.5 + 0.5 / alive, 0.5 + 1.5 / alive, 0.1, 0.9, 0.999, 1.0, 0.0, 0.2 / alive):
            check_fraction(scores, masks, fraction, True, device)
        check_fraction(scores, [], 0.7, False, device)


def test_fraction_errors(device):
    ts, ms = [torch.randn(40, device=device)], [torch.ones(40, dtype=torch.bool, device=device)]
    with pytest.raises(ValueError, match="k=-1"):
        torch.ops.nptm.global_magnitude_masks(ts, ms, 3, True, 0.5)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="fraction must be in"):
            torch.ops.nptm.global_magnitude_masks(ts, ms, -1, True, bad)
    with pytest.raises(ValueError, match="k must be >= 0"):
        torch.ops.nptm.global_magnitude_masks(ts, ms, -1, True)


def test_k_above_alive_on_the_sample_path(device, emulated):
    """k beyond the alive count with masks: both sample bounds land past the sample; a clear error, not a crash."""
    gen = torch.Generator().manual_seed(5)
    n = 20_000 if emulated else 200_000
    scores, masks = [torch.randn(n, generator=gen)], [torch.rand(n, generator=gen) < 0.5]
    alive = int(masks[0].sum())
    for k in (alive + 1, (alive + n) // 2, n):
        check_against_reference(scores, masks, k, True, device)


def test_nan_message_names_first_alive_nan_tensor(device):
    ts = [torch.ones(3), torch.tensor([1.0, float("nan")]), torch.tensor([float("nan")])]
    masks = [torch.ones(3, dtype=torch.bool), torch.tensor([True, False]), torch.tensor([True])]
    with pytest.raises(ValueError, match="NaN score in tensor 2"):
        torch.ops.nptm.global_magnitude_masks(to(ts, device), to(masks, device), 0, True)
    with pytest.raises(ValueError, match="NaN score in tensor 1"):
        torch.ops.nptm.global_magnitude_masks(to(ts, device), [], 1, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_multi_chunk(device, emulated, dtype, mode):
    """~50k entries (the CPU sample path): full-size histograms, several chunks, tie ranks carried across
    chunks and tensors; all-equal, +-0/+-Inf and heavy ties overflow the candidate buffer (radix fallback).
    Emulated: 32x fewer entries, as its chunks are 32x smaller."""
    gen = torch.Generator().manual_seed(DTYPES.index(dtype) * 10 + MODES.index(mode))
    rows, n = (4, 600) if emulated else (120, 20000)
    scores = [values((rows, 250), mode, dtype, gen), values((n,), mode, dtype, gen), values((3, 0), mode, dtype, gen)]
    masks = [torch.rand(s.shape, generator=gen) < 0.8 for s in scores]
    alive = sum(int(m.sum()) for m in masks)
    for k in (0, 1, alive // 3, alive // 2 + 1, alive - 1, alive):
        check_against_reference(scores, masks, k, True, device)
        check_against_reference(scores, [], k, False, device)


@functools.lru_cache
def sample_positions(n: int, size: int = 2**17) -> torch.Tensor:
    """The positions the sample select reads (csrc/ops/float_keys.h: sample_position; jittered stride, splitmix64)."""
    m64, size = 2**64 - 1, min(n, size)

    def mix64(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        return z ^ (z >> 31)

    pos = [i * n // size for i in range(size + 1)]
    return torch.tensor([pos[i] + (mix64(i) * (pos[i + 1] - pos[i]) >> 64) for i in range(size)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("side", ["above", "below"])
@pytest.mark.parametrize("masked", [False, True])
def test_sample_miss(device, emulated, dtype, side, masked):
    """Built so that the sample sees only one value range: the k-th |key| lies outside its bounds (the emulated
    CUDA code reads the CPU's sample positions and falls back to radix)."""
    gen = torch.Generator().manual_seed(DTYPES.index(dtype) + 5 * masked)
    n = 3 * 2**16
    sampled = torch.zeros(n, dtype=torch.bool)
    sampled[sample_positions(n)] = True
    low, high = torch.rand(n, generator=gen), 2 + torch.rand(n, generator=gen)
    flat = torch.where(sampled, low, high) if side == "above" else torch.where(sampled, high, low)
    flat = flat * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1)  # signs: |x| ranks differ from x
    scores = [flat[:40000].to(dtype).reshape(200, 200), flat[40000:].to(dtype)]
    masks = [torch.rand(s.shape, generator=gen) < 0.8 for s in scores] if masked else []
    alive = sum(int(m.sum()) for m in masks) if masked else n
    k = round((0.9 if side == "above" else 0.1) * alive)
    check_against_reference(scores, masks, k, True, device)
    assert not emulated or emulated_path() in ("miss", "overflow")  # bf16/fp16 ties may overflow first
    check_against_reference(scores, masks, k, False, device)


def emulated_path():
    """Which select the last emulated CUDA call ran: "sample", "miss"/"overflow" (sample, then radix), or "radix"."""
    return torch.ops.nptm._emu_global_magnitude_masks_last_path()


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_select_paths(monkeypatch, dtype):
    """The emulated CUDA code selects by sample on >= 2^14 entries and falls back to radix when the candidates overflow."""
    monkeypatch.setattr(torch.ops.nptm, "global_magnitude_masks", torch.ops.nptm._emu_global_magnitude_masks)
    gen = torch.Generator().manual_seed(31 + DTYPES.index(dtype))
    scores = [values((100, 60), "normal", dtype, gen), values((14000,), "normal", dtype, gen)]
    masks = [torch.rand(s.shape, generator=gen) < 0.9 for s in scores]
    alive = sum(int(m.sum()) for m in masks)
    for k in (1, alive // 3, alive - 1):
        check_against_reference(scores, masks, k, True, "cpu")
        assert emulated_path() == "sample"
    check_fraction(scores, [], 0.4, False, "cpu")
    assert emulated_path() == "sample"
    with_nan, nan_masks = [s.clone() for s in scores], [m.clone() for m in masks]
    with_nan[0].view(-1)[3], nan_masks[0].view(-1)[3] = float("nan"), False  # dead: ignored
    with_nan[1][7], nan_masks[1][7] = float("nan"), True
    check_against_reference(with_nan, nan_masks, alive // 3, True, "cpu")  # "NaN score in tensor 1", from the fused pass
    assert emulated_path() == "sample"
    check_against_reference(scores, masks, 0, True, "cpu")
    assert emulated_path() == "radix"
    check_against_reference([s[:50] for s in scores], [], 30, True, "cpu")
    assert emulated_path() == "radix"
    constant = [values((20000,), "constant", dtype, gen)]  # every key a candidate
    check_against_reference(constant, [], 5000, True, "cpu")
    assert emulated_path() == "overflow"


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_at_threshold(device, dtype):
    """A few hundred copies of the median among distinct values: the exact select among candidates orders them."""
    gen = torch.Generator().manual_seed(11)
    n = 3 * 2**17
    flat = torch.randn(n, generator=gen, dtype=torch.float64)
    flat[torch.randperm(n, generator=gen)[:300]] = flat.median()
    scores = [flat[:70000].to(dtype), flat[70000:].to(dtype).reshape(-1, 2)]  # bf16/fp16 add ties of their own
    for k in (n // 2 - 100, n // 2, n // 2 + 100):
        check_against_reference(scores, [], k, False, device)
    masks = [torch.rand(s.shape, generator=gen) < 0.5 for s in scores]
    alive = sum(int(m.sum()) for m in masks)
    check_against_reference(scores, masks, alive // 2, False, device)


def test_mixed_dtypes_cross_ties(device):
    """bf16/fp16/fp32/fp64 tensors holding equal values tie across dtypes; fp32 values between bf16 steps rank exactly."""
    gen = torch.Generator().manual_seed(4)
    base = torch.randint(-64, 65, (4, 20000), generator=gen).double() / 16  # exact in every dtype
    fine = base + torch.randint(-1, 2, base.shape, generator=gen) * 2.0**-12  # between bf16 neighbours
    scores = [base[0].bfloat16(), fine[1].float(), base[2].half().reshape(100, 200), fine[3]]
    masks = [torch.rand(s.shape, generator=gen) < 0.9 for s in scores]
    for k in (1, 25000, 40000, 79999):
        check_against_reference(scores, [], k, True, device)
        check_against_reference(scores, [], k, False, device)
    check_against_reference(scores, masks, 30000, True, device)


def test_two_million_entries(device, emulated):
    """Emulated: 32x fewer entries, as its chunks are 32x smaller (the same number of blocks)."""
    gen = torch.Generator().manual_seed(7)
    n, rows, scale = (62_500, 32, 32) if emulated else (2_000_000, 1000, 1)
    scores = [torch.randint(-40, 41, (n,), generator=gen).float(), torch.randn(rows, 300, generator=gen)]
    masks = [torch.rand(s.shape, generator=gen) < 0.9 for s in scores]
    alive = sum(int(m.sum()) for m in masks)
    check_against_reference(scores, masks, alive // 2 + 12345 // scale, True, device)  # threshold inside a huge tie
    check_against_reference(scores, [], 1_234_567 // scale, False, device)


def test_many_tensors(device):
    gen = torch.Generator().manual_seed(3)
    scores = [torch.randint(-5, 6, (int(n),), generator=gen).half() for n in torch.randint(0, 30, (350,), generator=gen)]
    total = sum(s.numel() for s in scores)
    for k in (0, 1, total // 2, total - 1, total):
        check_against_reference(scores, [], k, True, device)


def test_empty_inputs(device):
    assert ops.global_magnitude_masks([], 0.5) == [] and ops.global_magnitude_masks([], 0) == []
    with pytest.raises(ValueError, match="outside"):
        ops.global_magnitude_masks([], 1)
    out = torch.ops.nptm.global_magnitude_masks([torch.ones(0, 3, device=device)], [], 0, True)
    assert out[0].shape == (0, 3) and out[0].dtype == torch.bool
    with pytest.raises(ValueError, match="alive"):
        torch.ops.nptm.global_magnitude_masks([torch.ones(0, device=device)], [], 1, True)
    assert torch.ops.nptm.global_magnitude_masks([], [], 0, True) == []
    with pytest.raises(ValueError, match="k must be 0"):
        torch.ops.nptm.global_magnitude_masks([], [], 1, True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=problems(), amount=st.one_of(st.floats(0, 1), st.integers(0, 40)), signed=st.booleans())
def test_public_wrapper(device, problem, amount, signed):
    scores, masks, _, _ = problem
    tensors = [torch.zeros_like(s) for s in scores]  # scores= replaces |tensor| when given
    alive = sum(int(m.count_nonzero()) for m in masks) if masks else sum(t.numel() for t in scores)
    if isinstance(amount, int) and amount > alive:
        with pytest.raises(ValueError, match="outside"):
            ops.global_magnitude_masks(to(scores, device), amount, masks=to(masks, device) or None)
        return
    k = amount if isinstance(amount, int) else round(amount * alive)
    if signed:
        got = ops.global_magnitude_masks(to(tensors, device), amount, masks=to(masks, device) or None, scores=to(scores, device))
    else:
        got = ops.global_magnitude_masks(to(scores, device), amount, masks=to(masks, device) or None)
    expected = reference.global_magnitude_masks(scores, masks, k, not signed)
    assert len(got) == len(expected) and all(torch.equal(g.cpu(), e) for g, e in zip(got, expected))


def test_wrapper_amount_errors(device):
    ts = [torch.randn(4, 5, device=device)]
    for bad in (1.5, -0.1, float("nan"), 21, -1):
        with pytest.raises(ValueError, match="outside"):
            ops.global_magnitude_masks(ts, bad)
    for bad in (True, "0.5", None):
        with pytest.raises(TypeError):
            ops.global_magnitude_masks(ts, bad)
    assert not ops.global_magnitude_masks(ts, 1.0)[0].any()
    assert ops.global_magnitude_masks(ts, 0)[0].all()


def test_input_errors(device):
    a = torch.randn(3, device=device)
    with pytest.raises(ValueError, match="unsupported dtype"):
        torch.ops.nptm.global_magnitude_masks([a, torch.ones(3, dtype=torch.int32, device=device)], [], 1, True)
    with pytest.raises(ValueError, match="masks"):
        torch.ops.nptm.global_magnitude_masks([a, a], [torch.ones(3, dtype=torch.bool, device=device)], 1, True)
    with pytest.raises(ValueError, match="bool or uint8"):
        torch.ops.nptm.global_magnitude_masks([a], [torch.ones(3, device=device)], 1, True)
    with pytest.raises(ValueError, match="elements"):
        torch.ops.nptm.global_magnitude_masks([a], [torch.ones(4, dtype=torch.bool, device=device)], 1, True)
    with pytest.raises(ValueError, match="k must be"):
        torch.ops.nptm.global_magnitude_masks([a], [], -1, True)
    with pytest.raises(ValueError, match="unsupported dtype"):
        torch.ops.nptm.global_magnitude_masks([torch.ones(3, dtype=torch.int32, device=device)], [], 1, True)
    with pytest.raises(ValueError, match="scores"):
        ops.global_magnitude_masks([a], 1, scores=[a, a])


@pytest.mark.skipif(not torch.cuda.is_available() or not ops.has_cuda_kernels(), reason="needs a GPU and the CUDA kernels")
def test_mixed_devices():
    with pytest.raises(ValueError, match="is on"):
        torch.ops.nptm.global_magnitude_masks([torch.randn(3, device="cuda"), torch.randn(3)], [], 1, True)
    with pytest.raises(ValueError, match="is on"):
        torch.ops.nptm.global_magnitude_masks([torch.randn(3, device="cuda")], [torch.ones(3, dtype=torch.bool)], 1, True)


def test_portable_fused_pass_without_avx2():
    """The fp32 sample path runs AVX2 code where the CPU has it: its cases again on the portable loop (dtype0: fp32)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NPTM_DISABLE_AVX2="1")
    cases = "cpu and dtype0 and (multi_chunk or sample_miss or ties_at_threshold or fraction_on_the_sample_path)"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", cases],
                         env=env, capture_output=True, text=True, timeout=600)
    passed = re.search(r"(\d+) passed", run.stdout)
    assert run.returncode == 0 and passed and int(passed[1]) >= 13, run.stdout[-3000:] + run.stderr[-2000:]
