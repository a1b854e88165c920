"""Shims that plug percepfid into training frameworks, each behind its own pip extra and
imported only explicitly: :mod:`percepfid.integrations.basicsr` (``percepfid[basicsr]``)."""

__all__: list[str] = []
