"""Property-test kit for image-quality metrics, percepfid's or your own, in any framework:
the ``check_*`` functions of :mod:`~percepfid.testing.checks`, the distortions of
:mod:`~percepfid.testing.distortions`, :class:`FakeHub` (a local Hugging Face Hub) and,
imported explicitly (``pip install 'percepfid[test]'``), :mod:`percepfid.testing.strategies`.

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
