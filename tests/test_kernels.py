"""The cosine kernel: torch reference, registered ops, dispatch and the fused Triton kernels.

Scenarios that both backends serve are one test each, parametrised over ``backend``.
``triton.jit`` decides when a function is *decorated* (at import, for triton's own
``tl.zeros`` too) whether it is interpreted, so ``TRITON_INTERPRET=1`` must be set before
triton is first imported in the process; setting it mid-session cannot work and would
leak into other test modules. Hence two kinds of process run this file:

* an ordinary one: every test with ``backend='torch'`` (and the backend-free ones), plus
  :func:`test_triton_backend_in_an_interpreter_process`, which runs this file again in a
  child process with ``TRITON_INTERPRET=1`` and fails with the child's report;
* that child (or ``PERCEPFID_TEST_DEVICE=cuda pytest tests/test_kernels.py`` on a GPU,
  where ``TRITON_INTERPRET`` stays unset): the same scenarios with ``backend='triton'``
  and the Triton-only comparisons against the reference; nothing else is collected.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import examples, require
from hypothesis import given, settings
from hypothesis import strategies as st

from percepfid._errors import (
    ArgumentError,
    DTypeError,
    KernelUnavailableError,
    ShapeError,
)
from percepfid.kernels import _dispatch as dispatch
from percepfid.kernels import _ops as ops
from percepfid.kernels import cosine_similarity
from percepfid.kernels._ops import cosine_similarity_backward, cosine_similarity_forward
from percepfid.kernels._reference import (
    REDUCE_NONE,
    REDUCE_SUM,
    cosine_backward_reference,
    cosine_forward_reference,
)

# The spec: the public cosine on the torch backend.
cosine_similarity_reference = functools.partial(cosine_similarity, backend="torch")

_CHILD_FLAG = "PERCEPFID_TRITON_INTERPRETER_CHILD"
DEVICE = os.environ.get("PERCEPFID_TEST_DEVICE", "cpu")
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on"}
# A process that tests the Triton backend: the interpreter child, or a CUDA run.
TRITON_PROCESS = (
    _INTERPRET and ("triton" not in sys.modules or os.environ.get(_CHILD_FLAG) == "1")
) or DEVICE == "cuda"
BACKENDS = ("triton",) if TRITON_PROCESS else ("torch",)
if TRITON_PROCESS:
    require("triton")
    from percepfid.kernels import _triton

    assert DEVICE == "cuda" or _triton.INTERPRETED, "kernels were not built for the interpreter"

_EACH_BACKEND: set[str] = set()
_TRITON_ONLY: set[str] = set()


def each_backend(test):
    """Parametrise ``test`` over the backend this process tests (see the module docstring)."""
    _EACH_BACKEND.add(test.__name__)
    return pytest.mark.parametrize("backend", BACKENDS)(test)


def triton_only(test):
    """A comparison of the Triton kernels with the reference: runs in the Triton process."""
    _TRITON_ONLY.add(test.__name__)
    return test


def test_triton_backend_in_an_interpreter_process() -> None:
    """Outside a Triton process: run this file in a child that has the interpreter."""
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


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(
    *shape: int, seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 1.0
) -> torch.Tensor:
    """Seeded normal values (drawn on the CPU, so the same everywhere) on ``DEVICE``."""
    values = torch.randn(shape, generator=_generator(seed), dtype=torch.float64) * scale
    return values.to(device=DEVICE, dtype=dtype)


def _weight(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=_generator(seed), dtype=dtype).to(DEVICE)


def _uses_fused(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each call that takes the fused path (the registered ops)."""
    calls: list[int] = []
    original = dispatch._fused

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dispatch, "_fused", spy)
    return calls


# ----------------------------------------------------------------------------- values


def test_hand_computed_values() -> None:
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([[4.0, 3.0], [0.0, 2.0], [-2.0, -2.0], [5.0, 0.0]])
    expected = torch.tensor([24.0 / 25.0, 0.0, -1.0, 1.0])
    torch.testing.assert_close(cosine_similarity(x, y), expected, rtol=0, atol=1e-7)


def test_matches_torch_away_from_eps() -> None:
    x, y = _randn(3, 17, 40, seed=1), _randn(3, 17, 40, seed=2)
    torch.testing.assert_close(cosine_similarity(x, y), F.cosine_similarity(x, y, dim=-1))
    torch.testing.assert_close(
        cosine_similarity(x, y, dim=1), F.cosine_similarity(x, y, dim=1), rtol=1e-12, atol=1e-12
    )


@each_backend
def test_zero_and_tiny_vectors_follow_the_documented_eps_formula(backend: str) -> None:
    eps = 1e-3
    y = torch.tensor([[3.0, 4.0]], device=DEVICE)
    tiny = torch.tensor([[2e-4, 1e-4]], device=DEVICE, requires_grad=True)
    zero = torch.zeros(1, 2, device=DEVICE, requires_grad=True)
    # ||tiny|| < eps: the clamped norm is eps, so cos = <x, y> / (eps * ||y||), linear in x.
    value = cosine_similarity(tiny, y, eps=eps, backend=backend)
    torch.testing.assert_close(value, torch.tensor([(6e-4 + 4e-4) / (eps * 5.0)], device=DEVICE))
    value.sum().backward()
    torch.testing.assert_close(tiny.grad, y / (eps * 5.0))
    # At x = 0 the value is 0 and the gradient is the same finite y / (eps ||y||), not NaN.
    value = cosine_similarity(zero, y, eps=eps, backend=backend)
    assert value.item() == 0.0
    value.sum().backward()
    torch.testing.assert_close(zero.grad, y / (eps * 5.0))
    # Both zero: value 0, gradient 0.
    both = torch.zeros(1, 2, device=DEVICE, requires_grad=True)
    cosine_similarity(both, torch.zeros_like(both), backend=backend).sum().backward()
    assert torch.equal(both.grad, torch.zeros_like(both))
    # The same rows inside a batch of ordinary tokens.
    x = _randn(2, 257, 64, seed=9, dtype=torch.float32)
    y = _randn(2, 257, 64, seed=10, dtype=torch.float32)
    x[0, 3] = 0.0
    y[0, 4] = 0.0
    x[1, 5] = 0.0
    y[1, 5] = 0.0
    x[1, 6] *= 1e-5  # ||x|| ~ 8e-5 < eps
    if backend == "triton":  # values and gradients against the reference as well
        out = _compare(x, y, eps=eps, seed=11)
    else:
        out = cosine_similarity(x, y, eps=eps, backend=backend)
    assert out[0, 3] == 0 and out[0, 4] == 0 and out[1, 5] == 0


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_output_dtype_is_the_accumulation_dtype(dtype: torch.dtype, expected: torch.dtype) -> None:
    x = _randn(2, 3, 8).to(dtype)
    assert cosine_similarity(x, x).dtype == expected
    assert cosine_similarity(x, x.float(), reduce="mean").dtype == torch.promote_types(
        expected, torch.float32
    )


@each_backend
def test_bf16_self_similarity_never_exceeds_one(backend: str) -> None:
    # torch's own function returns 1.0078 for this case; the clamp removes the rounding.
    x = _randn(2, 64, 384, seed=14, dtype=torch.bfloat16, scale=7.0)
    cos = cosine_similarity(x, x, backend=backend)
    assert float(cos.max()) <= 1.0
    assert float(cosine_similarity(x, -x, backend=backend).min()) >= -1.0
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-6)


def test_clamp_keeps_the_gradient_of_the_unclamped_formula() -> None:
    # Nearly parallel rows: the value may round above 1 in float32, the gradient must not die.
    x = _randn(8, 64, seed=4, dtype=torch.float32)
    y = (x + 1e-4 * _randn(8, 64, seed=5, dtype=torch.float32)).requires_grad_(False)
    xr = x.clone().requires_grad_(True)
    cos = cosine_similarity(xr, y)
    assert float(cos.detach().max()) <= 1.0
    cos.sum().backward()
    x64, y64 = x.double(), y.double()
    nx, ny = x64.norm(dim=-1, keepdim=True), y64.norm(dim=-1, keepdim=True)
    analytic = y64 / (nx * ny) - (x64 * y64).sum(-1, keepdim=True) / (nx**3 * ny) * x64
    torch.testing.assert_close(xr.grad.double(), analytic, rtol=0, atol=2e-5)


@each_backend
def test_fp16_large_token_norms_stay_finite_and_correct(backend: str) -> None:
    # ||x|| around 600 and 900: the squared norms (3.6e5, 8e5) overflow float16 (max 65504).
    x = _randn(2, 33, 384, seed=6, dtype=torch.float16, scale=30.0)
    y = (_randn(2, 33, 384, seed=7, scale=45.0) + x.double()).to(torch.float16)
    assert float(x.double().norm(dim=-1).min()) > 400
    xr = x.clone().requires_grad_(True)
    cos = cosine_similarity(xr, y, backend=backend)
    truth = F.cosine_similarity(x.double(), y.double(), dim=-1)
    assert torch.isfinite(cos).all()
    torch.testing.assert_close(cos.double(), truth, rtol=0, atol=1e-5)
    if backend == "triton":  # values and gradients against the reference as well
        mean = _compare(x, y, reduce="mean")
    else:
        mean = cosine_similarity(x, y, reduce="mean", backend=backend)
    torch.testing.assert_close(mean.double(), truth.mean(-1), rtol=0, atol=1e-5)
    cos.sum().backward()
    assert torch.isfinite(xr.grad).all()
    assert float(xr.grad.float().abs().max()) > 0


@each_backend
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_float32_norms_far_from_one_stay_finite_and_correct(backend: str, magnitude: float) -> None:
    # Entries near 1e30: the squares (1e60) overflow float32, which gave NaN before the rows
    # were scaled. Entries near 1e-30: the squares (1e-60) underflowed to a zero norm.
    x = _randn(2, 33, 384, seed=40, dtype=torch.float32, scale=magnitude)
    y = (_randn(2, 33, 384, seed=41, scale=magnitude) + 0.5 * x.double()).float()
    x64 = x.double().requires_grad_(True)
    y64 = y.double().requires_grad_(True)
    # The plain formula in float64, whose range holds these squares.
    truth = (x64 * y64).sum(-1) / (x64.norm(dim=-1) * y64.norm(dim=-1))
    upstream = _randn(2, 33, seed=42)
    truth_grads = torch.autograd.grad(truth, (x64, y64), upstream)
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    cos = cosine_similarity(xr, yr, eps=1e-38, backend=backend)
    torch.testing.assert_close(cos.double(), truth.detach(), rtol=0, atol=2e-6)
    grads = torch.autograd.grad(cos, (xr, yr), upstream.float())
    for grad, expected in zip(grads, truth_grads, strict=True):
        assert torch.isfinite(grad).all()
        bound = 1e-5 * float(expected.abs().max())
        assert float((grad.double() - expected).abs().max()) <= bound
    mean = cosine_similarity(x, y, eps=1e-38, reduce="mean", backend=backend)
    torch.testing.assert_close(mean.double(), truth.detach().mean(-1), rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------- weights, reduce


def test_weighted_reductions_match_hand_formulas() -> None:
    x, y = _randn(3, 6, 5, seed=8), _randn(3, 6, 5, seed=9)
    w = torch.rand(3, 6, generator=_generator(10), dtype=torch.float64)
    cos = F.cosine_similarity(x, y, dim=-1)
    torch.testing.assert_close(cosine_similarity(x, y, weight=w), w * cos)
    torch.testing.assert_close(cosine_similarity(x, y, weight=w, reduce="sum"), (w * cos).sum(1))
    torch.testing.assert_close(
        cosine_similarity(x, y, weight=w, reduce="mean"), (w * cos).sum(1) / w.sum(1)
    )
    torch.testing.assert_close(cosine_similarity(x, y, reduce="mean"), cos.mean(1))
    # A per-token weight shared by every image broadcasts.
    shared = w[0]
    torch.testing.assert_close(
        cosine_similarity(x, y, weight=shared, reduce="mean"),
        (shared * cos).sum(1) / (shared.sum() * torch.ones(3, dtype=torch.float64)),
    )


def test_broadcast_and_dim() -> None:
    x = _randn(2, 7, 5, seed=11)
    prototypes = _randn(1, 7, 5, seed=12)
    torch.testing.assert_close(
        cosine_similarity(x, prototypes), F.cosine_similarity(x, prototypes.expand_as(x), dim=-1)
    )
    channels_first = x.transpose(1, 2)  # (B, D, N): features on dim 1
    torch.testing.assert_close(
        cosine_similarity(channels_first, prototypes.transpose(1, 2), dim=1),
        cosine_similarity(x, prototypes),
    )
    single = cosine_similarity(x[0, 0], prototypes[0, 0])  # one vector pair -> a scalar
    assert single.shape == ()


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("reduce", [None, "mean", "sum"])
def test_gradcheck_float64(reduce: str | None) -> None:
    x = _randn(2, 4, 6, seed=13).requires_grad_(True)
    y = _randn(2, 4, 6, seed=14).requires_grad_(True)
    w = torch.rand(2, 4, generator=_generator(15), dtype=torch.float64).requires_grad_(True)

    def fn(a, b, c):
        return cosine_similarity(a, b, weight=c, reduce=reduce, backend="torch")

    assert torch.autograd.gradcheck(fn, (x, y, w))
    assert torch.autograd.gradgradcheck(fn, (x, y, w))


def test_gradcheck_inside_the_eps_branch() -> None:
    # Norms ~1e-4 < eps = 1e-3: gradcheck's 1e-6 steps stay inside the clamped branch.
    x = (_randn(3, 5, seed=16) * 3e-5).requires_grad_(True)
    y = _randn(3, 5, seed=17).requires_grad_(True)
    assert float(x.detach().norm(dim=-1).max()) < 1e-3
    assert torch.autograd.gradcheck(lambda a, b: cosine_similarity(a, b, eps=1e-3), (x, y))


@pytest.mark.parametrize(
    ("reduce", "weighted", "need_dy"),
    [(None, False, True), ("sum", True, False), ("mean", True, True)],
)
def test_explicit_backward_formulas_match_autograd_of_the_spec(
    reduce: str | None, weighted: bool, need_dy: bool
) -> None:
    x = _randn(2, 6, 9, seed=18)
    y = _randn(2, 6, 9, seed=19)
    x[0, 1] = 0.0  # a zero row and a row below eps exercise the eps branch
    x[1, 2] *= 1e-9
    y[1, 3] = 0.0
    w = torch.rand(2, 6, generator=_generator(20), dtype=torch.float64) if weighted else None
    eps = 1e-6
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(need_dy)
    spec = cosine_similarity_reference(xr, yr, eps=eps, weight=w, reduce=reduce)
    grad = _randn(*spec.shape, seed=21)
    spec.backward(grad)

    code = REDUCE_NONE if reduce is None else REDUCE_SUM
    scale = 1.0 / 6 if reduce == "mean" and w is None else 1.0
    out, stats = cosine_forward_reference(x, y, w, eps, code, scale)
    upstream = grad / w.sum(-1) if reduce == "mean" and w is not None else grad
    if reduce == "mean" and w is not None:
        out = out / w.sum(-1)
    torch.testing.assert_close(out, spec.detach())
    dx, dy = cosine_backward_reference(upstream, x, y, w, stats, eps, code, scale, True, need_dy)
    torch.testing.assert_close(dx, xr.grad)
    if need_dy:
        torch.testing.assert_close(dy, yr.grad)
    else:
        assert dy.numel() == 0


# ----------------------------------------------------------------------------- invariants


@settings(max_examples=examples(30, 300), deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    features=st.integers(2, 48),
    log_scale=st.floats(-3.0, 3.0),
)
def test_invariants_float64(seed: int, features: int, log_scale: float) -> None:
    x = _randn(4, features, seed=seed)
    y = _randn(4, features, seed=seed + 1)
    a = 10.0**log_scale
    base = cosine_similarity(x, y)
    # Scale invariance in either argument (norms stay far above eps).
    torch.testing.assert_close(cosine_similarity(a * x, y), base, rtol=0, atol=1e-13)
    torch.testing.assert_close(cosine_similarity(x, a * y), base, rtol=0, atol=1e-13)
    xr = x.clone().requires_grad_(True)
    cosine_similarity(xr, y).sum().backward()
    grad = xr.grad
    # The gradient is orthogonal to x and its norm is sin(theta) / ||x||.
    norm_x = x.norm(dim=-1)
    assert float(((grad * x).sum(-1) / (grad.norm(dim=-1) * norm_x + 1e-300)).abs().max()) < 1e-12
    sin_theta = (1 - base.clamp(-1, 1) ** 2).clamp_min(0).sqrt()
    torch.testing.assert_close(grad.norm(dim=-1), sin_theta / norm_x, rtol=1e-10, atol=1e-14)
    assert float(base.abs().max()) <= 1.0
    assert not math.isnan(float(base.sum()))


# ----------------------------------------------------------------------------- registered ops


@each_backend
@pytest.mark.parametrize(
    ("weighted", "reduce", "y_grad"), [(False, REDUCE_NONE, True), (True, REDUCE_SUM, False)]
)
def test_opcheck_registered_ops(backend: str, weighted: bool, reduce: int, y_grad: bool) -> None:
    # The ops run the backend of this process: the Triton kernels in the Triton process.
    x = _randn(2, 5, 33, seed=22, dtype=torch.float32).requires_grad_(True)
    y = _randn(2, 5, 33, seed=23, dtype=torch.float32).requires_grad_(y_grad)
    w = _weight(2, 5, seed=24).requires_grad_(True) if weighted else None
    scale = 0.2 if reduce == REDUCE_SUM else 1.0
    torch.library.opcheck(cosine_similarity_forward, (x, y, w, 1e-8, reduce, scale))
    if backend == "torch":  # (the kernels' strided views: test_triton_non_contiguous_inputs)
        # Non-contiguous inputs go through the op as views.
        torch.library.opcheck(
            cosine_similarity_forward,
            (x.transpose(0, 1), y.transpose(0, 1), None, 1e-8, reduce, 1.0),
        )
    w = None if w is None else w.detach()
    _, stats = cosine_similarity_forward(x.detach(), y.detach(), w, 1e-8, reduce, scale)
    grad = _randn(*((2,) if reduce == REDUCE_SUM else (2, 5)), seed=25, dtype=torch.float32)
    args = (grad, x.detach(), y.detach(), w, stats, 1e-8, reduce, scale, True, y_grad)
    torch.library.opcheck(cosine_similarity_backward, args)


def test_registered_op_autograd_matches_the_spec() -> None:
    x = _randn(3, 4, 10, seed=25).requires_grad_(True)
    y = _randn(3, 4, 10, seed=26).requires_grad_(True)
    w = torch.rand(3, 4, generator=_generator(27), dtype=torch.float64).requires_grad_(True)
    out, _ = cosine_similarity_forward(x, y, w, 1e-8, REDUCE_SUM, 1.0)
    grad = _randn(3, seed=28)
    got = torch.autograd.grad(out, (x, y, w), grad)
    spec = cosine_similarity_reference(x, y, weight=w, reduce="sum")
    expected = torch.autograd.grad(spec, (x, y, w), grad)
    torch.testing.assert_close(out, spec)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_registered_op_refuses_double_backward_clearly() -> None:
    x = torch.randn(2, 3, 5, generator=_generator(32), requires_grad=True)
    y = torch.randn(2, 3, 5, generator=_generator(33))
    out, _ = cosine_similarity_forward(x, y, None, 1e-8, REDUCE_SUM, 1.0)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(KernelUnavailableError, match="backend='torch'"):
        grad.square().sum().backward()


@each_backend
def test_torch_compile_fullgraph(backend: str) -> None:
    torch._dynamo.reset()

    def loss(sr_tokens, gt_tokens, weight):
        fidelity = cosine_similarity(
            sr_tokens, gt_tokens, weight=weight, reduce="mean", backend=backend
        )
        return (1 - fidelity).mean()

    def fused_op_loss(sr_tokens, gt_tokens):
        out, _ = torch.ops.percepfid.cosine_similarity_forward(
            sr_tokens, gt_tokens, None, 1e-8, REDUCE_SUM, 1.0 / sr_tokens.shape[1]
        )
        return (1 - out).mean()

    x = _randn(2, 17, 70, seed=20, dtype=torch.bfloat16).requires_grad_(True)
    y = _randn(2, 17, 70, seed=21, dtype=torch.bfloat16)
    w = _weight(17, seed=22)
    for fn, args in ((loss, (x, y, w)), (fused_op_loss, (x, y))):
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        value = compiled(*args)
        (grad,) = torch.autograd.grad(value, x)
        # Eager, on the reference: the spec the compiled graph must reproduce.
        xr = x.detach().clone().requires_grad_(True)
        weight = w if fn is loss else None
        spec = cosine_similarity_reference(xr, y, weight=weight, reduce="mean")
        (expected_grad,) = torch.autograd.grad((1 - spec).mean(), xr)
        torch.testing.assert_close(value, (1 - spec).mean(), rtol=0, atol=1e-6)
        _assert_grad_close(grad, expected_grad, torch.bfloat16)


# ----------------------------------------------------------------------------- dispatch


def test_auto_on_cpu_uses_the_reference_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PERCEPFID_KERNEL", raising=False)
    calls = _uses_fused(monkeypatch)
    x = torch.randn(2, 3, 4)
    with caplog.at_level(logging.DEBUG, logger="percepfid"):
        cosine_similarity(x, x)
    assert calls == []
    assert caplog.records == []


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(2, 3, 4)
    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1") as info:
        cosine_similarity(x, x, backend="triton")
    assert "backend='torch'" in str(info.value)
    assert isinstance(info.value, ArgumentError)


def test_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(2, 3, 4)
    monkeypatch.setenv("PERCEPFID_KERNEL", "triton")
    with pytest.raises(KernelUnavailableError, match="PERCEPFID_KERNEL=triton"):
        cosine_similarity(x, x)
    # An explicit argument wins over the switch.
    torch.testing.assert_close(cosine_similarity(x, x, backend="torch"), torch.ones(2, 3))
    monkeypatch.setenv("PERCEPFID_KERNEL", "torch")
    with pytest.raises(KernelUnavailableError):
        cosine_similarity(x, x, backend="triton")
    calls = _uses_fused(monkeypatch)
    cosine_similarity(x, x)
    assert calls == []
    monkeypatch.setenv("PERCEPFID_KERNEL", "cuda")
    with pytest.raises(ValueError, match="PERCEPFID_KERNEL"):
        cosine_similarity(x, x)


def test_triton_refusal_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    doubles = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.raises(KernelUnavailableError, match="float64"):
        cosine_similarity(doubles, doubles, backend="triton")
    meta = torch.empty(2, 3, 4, device="meta")
    with pytest.raises(KernelUnavailableError, match="CUDA"):
        cosine_similarity(meta, meta, backend="triton")
    monkeypatch.setattr(ops, "_TRITON_INSTALLED", False)
    x = torch.randn(2, 3, 4)
    with pytest.raises(KernelUnavailableError, match="pip install triton"):
        cosine_similarity(x, x, backend="triton")


def test_auto_on_cuda_tensors_picks_triton_or_logs_the_reason_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fake CUDA tensors carry device and dtype without a GPU: enough for the dispatch rules.
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.delenv("PERCEPFID_KERNEL", raising=False)
    monkeypatch.setattr(dispatch, "_logged_reasons", set())
    with FakeTensorMode():
        half = torch.empty(2, 3, 4, device="cuda", dtype=torch.bfloat16)
        doubles = torch.empty(2, 3, 4, device="cuda", dtype=torch.float64)
        assert dispatch.select_backend("auto", half, half) == "triton"
        assert dispatch.select_backend("triton", half, half.float()) == "triton"
        with caplog.at_level(logging.INFO, logger="percepfid"):
            for _ in range(3):
                assert dispatch.select_backend("auto", doubles, doubles) == "torch"
        with pytest.raises(KernelUnavailableError, match="float64"):
            dispatch.select_backend("triton", doubles, doubles)
        monkeypatch.setattr(ops, "_TRITON_INSTALLED", False)
        assert dispatch.select_backend("auto", half, half) == "torch"
        monkeypatch.setenv("PERCEPFID_KERNEL", "torch")
        assert dispatch.select_backend("auto", half, half) == "torch"
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "float64" in m]) == 1, messages


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": [1.0, 2.0]}, DTypeError, "x must be a torch.Tensor"),
        ({"y": torch.ones(2, 3, dtype=torch.int64)}, DTypeError, "y must be a floating"),
        ({"y": torch.ones(2, 5)}, ShapeError, "broadcastable"),
        ({"dim": 2}, ArgumentError, "dim must be an int"),
        ({"eps": 0.0}, ArgumentError, "eps must be a finite number > 0"),
        ({"reduce": "max"}, ArgumentError, "reduce must be one of"),
        ({"backend": "cuda"}, ArgumentError, "backend must be one of"),
        ({"weight": torch.ones(3)}, ShapeError, r"per-token cosine shape \(2,\)"),
        ({"weight": torch.ones(4, 2)}, ShapeError, "weight must broadcast"),
        ({"x": torch.ones(3), "y": torch.ones(3), "reduce": "mean"}, ShapeError, "token axis"),
    ],
)
def test_argument_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    arguments = {"x": torch.ones(2, 3), "y": torch.ones(2, 3)} | kwargs
    x, y = arguments.pop("x"), arguments.pop("y")
    with pytest.raises(error, match=match):
        cosine_similarity(x, y, **arguments)


def test_import_does_not_import_triton() -> None:
    code = (
        "import sys, percepfid, percepfid.kernels, torch\n"
        "x = torch.randn(2, 3, 4, requires_grad=True)\n"
        "percepfid.kernels.cosine_similarity(x, x.detach(), reduce='mean').sum().backward()\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


_GPU_COMPILE_SCRIPT = """
import triton
import triton.compiler as tc
from triton.backends.compiler import GPUTarget
from percepfid.kernels import _triton as kernels

assert not kernels.INTERPRETED
# What triton's JIT assumes for 16-byte aligned pointers and strides divisible by 16.
ALIGNED = {"x_ptr", "y_ptr", "dx_ptr", "dy_ptr", "grad_ptr", "w_ptr", "out_ptr", "stats_ptr",
           "D", "stride_xl", "stride_xn", "stride_yl", "stride_yn"}

def ptx(kernel, pointer_types, constexprs, arch):
    names = list(kernel.arg_names)
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointer_types.get(name, "*fp32")
        else:
            signature[name] = "fp32" if name in ("eps", "scale") else "i32"
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ALIGNED
             if n in names and n not in constexprs}
    source = tc.ASTSource(fn=kernel, signature=signature, attrs=attrs, constexprs=constexprs)
    target = GPUTarget("cuda", arch, 32)
    return triton.compile(source, target=target, options={"num_warps": 8}).asm["ptx"]

bf16 = {"x_ptr": "*bf16", "y_ptr": "*bf16", "dx_ptr": "*bf16", "dy_ptr": "*bf16"}
tile = {"BLOCK_R": 16, "BLOCK_D": 256, "stride_xd": 1, "stride_yd": 1}
forward = ptx(kernels._cosine_forward_kernel, bf16,
              {"HAS_WEIGHT": True, "REDUCE": True, **tile}, 90)
backward = ptx(kernels._cosine_backward_kernel, bf16,
               {"HAS_WEIGHT": False, "REDUCE": False, "HAS_DX": True, "HAS_DY": True, **tile}, 90)
d1 = ptx(kernels._cosine_backward_kernel, {"x_ptr": "*fp16", "y_ptr": "*fp16", "dx_ptr": "*fp16"},
         {"HAS_WEIGHT": True, "REDUCE": True, "HAS_DX": True, "HAS_DY": False,
          "BLOCK_R": 1, "BLOCK_D": 1}, 80)
print(forward.count("ld.global.v4"), forward.count("atom.global"),
      backward.count("ld.global.v4"), backward.count("st.global.v4"), d1.count("st.global"))
"""


def test_kernels_compile_for_nvidia_gpus_with_vector_memory_access() -> None:
    """Compile (no GPU needed) for sm_90/sm_80 and check 128-bit loads and stores.

    The interpreter accepts code the GPU compiler rejects, and bandwidth needs vector
    memory access: with aligned, contiguous bf16 rows each thread moves 8 elements at once.
    """
    require("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _GPU_COMPILE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    fwd_v4_loads, fwd_atomics, bwd_v4_loads, bwd_v4_stores, d1_stores = map(
        int, result.stdout.split()
    )
    # 16 x 256 tile, 256 threads: 16 elements of x and of y per thread = 2 + 2 128-bit loads.
    assert fwd_v4_loads >= 4 and bwd_v4_loads >= 4
    assert bwd_v4_stores >= 4  # dx and dy
    assert fwd_atomics >= 1  # the per-image sum
    assert d1_stores >= 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_uses_triton_and_matches_reference(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PERCEPFID_KERNEL", raising=False)
    calls = _uses_fused(monkeypatch)
    x = torch.randn(3, 257, 1000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = torch.randn(3, 257, 1000, device="cuda", dtype=torch.bfloat16)
    out = cosine_similarity(x, y, reduce="mean")
    assert calls == [1]
    (grad,) = torch.autograd.grad(out.sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    ref = cosine_similarity_reference(xr, y, reduce="mean")
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        grad.float(), ref_grad.float(), rtol=0, atol=1e-2 * float(ref_grad.abs().max())
    )
    monkeypatch.setattr(dispatch, "_logged_reasons", set())
    with caplog.at_level(logging.INFO, logger="percepfid"):
        for _ in range(2):
            cosine_similarity(x.double(), y.double())
    assert len([r for r in caplog.records if "float64" in r.getMessage()]) == 1


# ----------------------------------------------------------------------------- Triton kernels

# Gradients are stored in the input dtype: allow a couple of its rounding steps, relative
# to the largest gradient entry. Forward values are float32 in every case.
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FORWARD_ATOL = 2e-6


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
        grad_out = torch.randn(out.shape, generator=_generator(seed)).to(out.device) * 3
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


@triton_only
@pytest.mark.parametrize(("dtype", "batch", "tokens", "features"), _CASES)
def test_triton_matches_reference_on_odd_shapes(
    dtype: torch.dtype, batch: int, tokens: int, features: int
) -> None:
    x = _randn(batch, tokens, features, seed=features, dtype=dtype)
    y = _randn(batch, tokens, features, seed=features + 1, dtype=dtype) + 0.5 * x
    _compare(x, y, seed=batch * tokens)


@triton_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduce", [None, "mean", "sum"])
def test_triton_weights_and_reductions(dtype: torch.dtype, reduce: str | None) -> None:
    x = _randn(3, 257, 383, seed=1, dtype=dtype)
    y = _randn(3, 257, 383, seed=2, dtype=dtype)
    weight = _weight(3, 257, seed=3)
    _compare(x, y, weight=weight, reduce=reduce, y_grad=reduce != "sum")


@triton_only
def test_triton_shared_weight_broadcast_and_unweighted_mean() -> None:
    x = _randn(3, 257, 96, seed=4, dtype=torch.float32)
    y = _randn(1, 257, 96, seed=5, dtype=torch.float32)  # one reference for every image
    weight = _weight(257, seed=6)
    _compare(x, y, weight=weight, reduce="mean")
    _compare(x, y, reduce="mean")


@triton_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_non_contiguous_inputs(dtype: torch.dtype) -> None:
    base = _randn(3, 300, 1200, seed=7, dtype=dtype)
    x = base[:, ::2, 7:1007:2]  # strided on every axis: (3, 150, 500)
    y_channels_first = _randn(3, 500, 150, seed=8, dtype=dtype)  # features on dim 1
    y = y_channels_first.transpose(1, 2)
    assert not x.is_contiguous() and not y.is_contiguous()
    _compare(x, y)
    _compare(x.transpose(1, 2), y_channels_first, dim=1, reduce="mean")


@triton_only
def test_triton_mixed_input_dtypes() -> None:
    # Under autocast the SR branch may be bfloat16 while the reference stays float32.
    x = _randn(2, 257, 383, seed=24, dtype=torch.bfloat16)
    y = _randn(2, 257, 383, seed=25, dtype=torch.float32)
    _compare(x, y, reduce="mean")


@triton_only
def test_triton_deterministic_mode_sums_without_atomics() -> None:
    x = _randn(3, 257, 40, seed=15, dtype=torch.float32)
    y = _randn(3, 257, 40, seed=16, dtype=torch.float32)
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


@triton_only
def test_triton_dispatch_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _uses_fused(monkeypatch)
    monkeypatch.delenv("PERCEPFID_KERNEL", raising=False)
    x = _randn(2, 3, 8, seed=17, dtype=torch.float32)
    cosine_similarity(x, x)  # auto: CPU tensors always take the reference, CUDA the kernel
    auto = [1] if DEVICE == "cuda" else []
    assert calls == auto
    cosine_similarity(x, x, backend="triton")
    assert calls == [*auto, 1]
    monkeypatch.setenv("PERCEPFID_KERNEL", "triton")
    cosine_similarity(x, x)
    assert calls == [*auto, 1, 1]


# In the Triton process only the scenarios and the Triton comparisons are collected; in an
# ordinary process everything else (the scenarios with backend='torch').
for _name in [name for name in globals() if name.startswith("test_")]:
    if TRITON_PROCESS:
        _keep = _name in _EACH_BACKEND or _name in _TRITON_ONLY
    else:
        _keep = _name not in _TRITON_ONLY
    if not _keep:
        del globals()[_name]
