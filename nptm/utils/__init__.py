"""Generic helpers shared by every package: the plug-in registry."""
from nptm.utils.registry import Registry, UnknownChoice

__all__ = ["Registry", "UnknownChoice"]
