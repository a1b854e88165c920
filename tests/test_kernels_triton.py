"""The fused Triton kernels against the torch reference, on CPU through ``TRITON_INTERPRET=1``.

``triton.jit`` decides when a function is *decorated* (at import, for triton's own
``tl.zeros`` too) whether it is interpreted, so ``TRITON_INTERPRET=1`` must be set before
triton is first imported by anything in the process, torch.compile included. Setting it
mid-session cannot work and would leak into other test modules, so:

* in a process started with ``TRITON_INTERPRET=1`` (and triton not yet imported, or in
  the child below) the tests of this module run directly;
* otherwise the module holds a single test that runs this file again in a fresh Python
  process with ``TRITON_INTERPRET=1`` and fails with the child's report if any case fails.

A GPU needs neither: on CUDA the same comparisons run with ``TRITON_INTERPRET`` unset via
``PERCEPFID_TEST_DEVICE=cuda pytest tests/test_kernels_triton.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import require

_CHILD_FLAG = "PERCEPFID_TRITON_INTERPRETER_CHILD"
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on"}
_DIRECT = (_INTERPRET and ("triton" not in sys.modules or os.environ.get(_CHILD_FLAG) == "1")) or (
    os.environ.get("PERCEPFID_TEST_DEVICE") == "cuda"
)

from percepfid.kernels import _dispatch as dispatch  # noqa: E402
from percepfid.kernels import cosine_similarity  # noqa: E402
from percepfid.kernels._ops import cosine_similarity_forward  # noqa: E402
from percepfid.kernels._reference import (  # noqa: E402
    REDUCE_NONE,
    REDUCE_SUM,
    cosine_similarity_reference,
)

_DEVICE = os.environ.get("PERCEPFID_TEST_DEVICE", "cpu")
if _DIRECT:
    require("triton")
    from percepfid.kernels import _triton  # noqa: E402

    assert _DEVICE == "cuda" or _triton.INTERPRETED, "kernels were not built for the interpreter"


def test_triton_kernels_in_an_interpreter_process() -> None:
    """Outside an interpreter process: run this file in a child that has one."""
    require("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", **{_CHILD_FLAG: "1"})
    env.pop("PERCEPFID_KERNEL", None)
    env.pop("PERCEPFID_TEST_DEVICE", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    child = subprocess.run(
        command,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=540,
    )
    report = (child.stdout + child.stderr)[-6000:]
    assert child.returncode == 0, f"interpreter run of {__file__} failed:\n{report}"
    assert " passed" in report and " failed" not in report, report


# Gradients are stored in the input dtype: allow a couple of its rounding steps, relative
# to the largest gradient entry. Forward values are float32 in every case.
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FORWARD_ATOL = 2e-6


def _rand(shape, dtype, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * scale).to(device=_DEVICE, dtype=dtype)


def _weight(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(_DEVICE)


def _assert_grad_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, floor: float = 0.0
) -> None:
    """Max error within GRAD_RTOL of the largest entry (or of ``floor``, if larger)."""
    assert actual.dtype == expected.dtype == dtype
    actual, expected = actual.double(), expected.double()
    bound = GRAD_RTOL[dtype] * max(float(expected.abs().max()), floor) + 1e-12
    error = float((actual - expected).abs().max())
    assert error <= bound, f"max gradient error {error:.3g} > {bound:.3g}"


def _compare(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    dim: int = -1,
    eps: float = 1e-8,
    weight: torch.Tensor | None = None,
    reduce: str | None = None,
    y_grad: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """Run both backends with the same upstream gradient; compare outputs and gradients."""
    results = []
    for backend in ("triton", "torch"):
        xr = x.detach().clone().requires_grad_(True)
        yr = y.detach().clone().requires_grad_(y_grad)
        wr = None if weight is None else weight.detach().clone().requires_grad_(True)
        out = cosine_similarity(xr, yr, dim=dim, eps=eps, weight=wr, reduce=reduce, backend=backend)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)) * 3
        grad_out = grad_out.to(out.device)
        inputs = [t for t in (xr, yr, wr) if t is not None and t.requires_grad]
        grads = torch.autograd.grad(out, inputs, grad_out)
        results.append((out, grads))
    (out, grads), (ref_out, ref_grads) = results
    # dx = a y - b x is a difference of terms of size |g| / ||x||; when the two nearly
    # cancel (D = 1: the gradient is exactly 0) rounding is relative to the terms.
    floor = 0.0
    if reduce is None:
        norms = torch.minimum(x.double().norm(dim=dim), y.double().norm(dim=dim)).clamp_min(eps)
        upstream = grad_out.double().abs() * (1 if weight is None else weight.double().abs())
        floor = float((upstream / norms).max())
    assert out.dtype == ref_out.dtype == torch.float32
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=0, atol=FORWARD_ATOL)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(grad).all()
        _assert_grad_close(grad, ref_grad, ref_grad.dtype, floor)
    return out


# (B, N) per D: every D meets a single-token and a 257-token case across the dtypes.
_SHAPES = {1: [(3, 257), (1, 1)], 3: [(1, 257), (3, 1)], 383: [(3, 257), (1, 1)],
           1000: [(1, 1), (3, 257)], 1537: [(3, 1), (1, 257)]}  # fmt: skip
_CASES = [
    (dtype, batch, tokens, features)
    for index, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16))
    for features, shapes in _SHAPES.items()
    for batch, tokens in [shapes[index % 2]]
]


@pytest.mark.parametrize(("dtype", "batch", "tokens", "features"), _CASES)
def test_matches_reference_on_odd_shapes(
    dtype: torch.dtype, batch: int, tokens: int, features: int
) -> None:
    x = _rand((batch, tokens, features), dtype, seed=features)
    y = _rand((batch, tokens, features), dtype, seed=features + 1) + 0.5 * x
    _compare(x, y, seed=batch * tokens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduce", [None, "mean", "sum"])
def test_weights_and_reductions(dtype: torch.dtype, reduce: str | None) -> None:
    x = _rand((3, 257, 383), dtype, seed=1)
    y = _rand((3, 257, 383), dtype, seed=2)
    weight = _weight(3, 257, seed=3)
    _compare(x, y, weight=weight, reduce=reduce, y_grad=reduce != "sum")


def test_shared_weight_broadcast_and_unweighted_mean() -> None:
    x = _rand((3, 257, 96), torch.float32, seed=4)
    y = _rand((1, 257, 96), torch.float32, seed=5)  # one reference broadcast to every image
    weight = _weight(257, seed=6)
    _compare(x, y, weight=weight, reduce="mean")
    _compare(x, y, reduce="mean")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_non_contiguous_inputs(dtype: torch.dtype) -> None:
    base = _rand((3, 300, 1200), dtype, seed=7)
    x = base[:, ::2, 7:1007:2]  # strided on every axis: (3, 150, 500)
    y_channels_first = _rand((3, 500, 150), dtype, seed=8)  # features on dim 1
    y = y_channels_first.transpose(1, 2)
    assert not x.is_contiguous() and not y.is_contiguous()
    _compare(x, y)
    _compare(x.transpose(1, 2), y_channels_first, dim=1, reduce="mean")


def test_mixed_input_dtypes() -> None:
    # Under autocast the SR branch may be bfloat16 while the reference stays float32.
    x = _rand((2, 257, 383), torch.bfloat16, seed=24)
    y = _rand((2, 257, 383), torch.float32, seed=25)
    _compare(x, y, reduce="mean")


def test_zero_and_sub_eps_rows() -> None:
    x = _rand((2, 257, 64), torch.float32, seed=9)
    y = _rand((2, 257, 64), torch.float32, seed=10)
    x[0, 3] = 0.0
    y[0, 4] = 0.0
    x[1, 5] = 0.0
    y[1, 5] = 0.0
    x[1, 6] *= 1e-5  # ||x|| ~ 8e-5 < eps
    out = _compare(x, y, eps=1e-3, seed=11)
    assert out[0, 3] == 0 and out[0, 4] == 0 and out[1, 5] == 0


def test_fp16_large_norms_stay_finite() -> None:
    x = _rand((2, 33, 384), torch.float16, seed=12, scale=30.0)  # ||x|| ~ 600
    y = (x.double() + _rand((2, 33, 384), torch.float64, seed=13, scale=40.0)).to(torch.float16)
    out = _compare(x, y, reduce="mean")
    truth = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean(-1)
    torch.testing.assert_close(out.double(), truth, rtol=0, atol=1e-5)


def test_bf16_self_similarity_is_at_most_one() -> None:
    x = _rand((2, 64, 384), torch.bfloat16, seed=14, scale=7.0)
    out = cosine_similarity(x, x, backend="triton")
    assert float(out.max()) <= 1.0
    torch.testing.assert_close(out, torch.ones_like(out), rtol=0, atol=1e-6)


def test_deterministic_mode_sums_without_atomics() -> None:
    x = _rand((3, 257, 40), torch.float32, seed=15)
    y = _rand((3, 257, 40), torch.float32, seed=16)
    atomic = cosine_similarity(x, y, reduce="sum", backend="triton")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = cosine_similarity(x, y, reduce="sum", backend="triton")
        second = cosine_similarity(x, y, reduce="sum", backend="triton")
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, atomic, rtol=0, atol=1e-4)
    torch.testing.assert_close(first, cosine_similarity_reference(x, y, reduce="sum"))


def test_dispatch_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = dispatch._fused
    monkeypatch.setattr(dispatch, "_fused", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.delenv("PERCEPFID_KERNEL", raising=False)
    x = _rand((2, 3, 8), torch.float32, seed=17)
    cosine_similarity(x, x)  # auto: CPU tensors always take the reference, CUDA the kernel
    auto = [1] if _DEVICE == "cuda" else []
    assert calls == auto
    cosine_similarity(x, x, backend="triton")
    assert calls == [*auto, 1]
    monkeypatch.setenv("PERCEPFID_KERNEL", "triton")
    cosine_similarity(x, x)
    assert calls == [*auto, 1, 1]


@pytest.mark.parametrize(("reduce", "weighted"), [(REDUCE_NONE, True), (REDUCE_SUM, False)])
def test_opcheck_with_the_interpreted_kernels(reduce: int, weighted: bool) -> None:
    x = _rand((2, 5, 33), torch.float32, seed=18).requires_grad_(True)
    y = _rand((2, 5, 33), torch.float32, seed=19).requires_grad_(True)
    weight = _weight(2, 5, seed=23).requires_grad_(True) if weighted else None
    scale = 0.2 if reduce == REDUCE_SUM else 1.0
    torch.library.opcheck(cosine_similarity_forward, (x, y, weight, 1e-8, reduce, scale))


def test_torch_compile_fullgraph_with_the_fused_kernel() -> None:
    torch._dynamo.reset()

    def loss(sr_tokens, gt_tokens, weight):
        return (
            1
            - cosine_similarity(
                sr_tokens, gt_tokens, weight=weight, reduce="mean", backend="triton"
            ).mean()
        )

    x = _rand((2, 17, 70), torch.bfloat16, seed=20).requires_grad_(True)
    y = _rand((2, 17, 70), torch.bfloat16, seed=21)
    weight = _weight(17, seed=22)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled(x, y, weight)
    (grad,) = torch.autograd.grad(value, x)
    xr = x.detach().clone().requires_grad_(True)
    expected = 1 - cosine_similarity_reference(xr, y, weight=weight, reduce="mean").mean()
    (expected_grad,) = torch.autograd.grad(expected, xr)
    torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    _assert_grad_close(grad, expected_grad, torch.bfloat16)


# In a process without the interpreter only the subprocess test above is collected; in the
# interpreter process (or on CUDA) every test below it runs and the subprocess test is not.
if _DIRECT:
    del test_triton_kernels_in_an_interpreter_process
else:
    for _name in [name for name in globals() if name.startswith("test_")]:
        if _name != "test_triton_kernels_in_an_interpreter_process":
            del globals()[_name]
