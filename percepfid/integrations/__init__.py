"""Shims that plug percepfid into training frameworks, each behind its own pip extra.

- :mod:`percepfid.integrations.basicsr`: importing it registers percepfid's losses and
  validation metrics in BasicSR's ``LOSS_REGISTRY`` and ``METRIC_REGISTRY``
  (``pip install 'percepfid[basicsr]'``).

Nothing here is imported by ``import percepfid``; import the shim you need.
"""

__all__: list[str] = []
