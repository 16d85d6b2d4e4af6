"""Generic helpers shared by every package: the plug-in registry, error types, atomic writes, seeding."""
from nptm.utils.errors import CheckpointError, ConfigError, UserError
from nptm.utils.files import atomic_write, atomic_write_json
from nptm.utils.registry import Registry, UnknownChoice

__all__ = ["CheckpointError", "ConfigError", "Registry", "UnknownChoice", "UserError", "atomic_write",
           "atomic_write_json"]
