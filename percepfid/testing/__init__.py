"""Property-test kit for image-quality metrics: checks, distortions and hypothesis strategies.

Use it to unit-test any metric or loss, percepfid's or your own, in any test framework:

- :mod:`~percepfid.testing.checks`: ``check_identity``, ``check_symmetric``,
  ``check_antisymmetric``, ``check_range``, ``check_gradients``,
  ``check_batch_invariance``, ``check_dtype_consistency`` and ``check_monotone``, plain
  functions that raise ``AssertionError`` with the failing items and values;
- :mod:`~percepfid.testing.distortions`: blur, noise, quantisation and down-up resampling
  with a severity level (``distort(x, kind, level)``);
- :mod:`percepfid.testing.strategies`: hypothesis strategies (``images``, ``image_pairs``,
  ``distortions``, ``distorted``). It needs hypothesis (``pip install 'percepfid[test]'``)
  and is imported explicitly; this package imports without it.

A *metric* is any callable ``metric(a, b) -> Tensor`` returning one value per image,
shape ``(B,)``, or a scalar; ``a`` is the image under test and ``b`` the reference.

Example:
    >>> import torch
    >>> from percepfid.testing import check_batch_invariance, check_monotone
    >>> mse = lambda a, b: (a - b).pow(2).flatten(1).mean(1)
    >>> x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> check_batch_invariance(mse, x, x.flip(0))
    >>> check_monotone(mse, x, "noise", higher_is_better=False)
"""

from __future__ import annotations

from . import checks, distortions
from ._fake_hub import FakeHub, FakeHubRequest
from .checks import *  # noqa: F403 - every name of checks.__all__
from .distortions import *  # noqa: F403 - every name of distortions.__all__

__all__ = ["FakeHub", "FakeHubRequest", *checks.__all__, *distortions.__all__]
