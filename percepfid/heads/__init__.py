"""Small trainable heads that sit on frozen backbones, saved in the Hub format."""

from ._base import HubHead

__all__ = ["HubHead"]
