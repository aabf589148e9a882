"""Errors that name their culprit. Never return None to mean 'failed'."""
from __future__ import annotations


class CascadeError(Exception):
    """Base class: a clear, user-facing error."""


class ConfigError(CascadeError):
    """The YAML is malformed, has an unknown key or backend, a wrong type, or
    points at a model that is not there. Raised before any model loads."""


class ModelNotFoundError(ConfigError):
    """A model named in the config cannot be found locally (and nothing is ever
    downloaded at run time). The message says how to provide it."""


class MissingDependencyError(CascadeError):
    """A backend's optional package is not installed; the message gives the pip
    command that fixes it."""


class AudioInputError(CascadeError):
    """Input audio cannot be used (unreadable file, too many channels, empty)."""


class OutputError(CascadeError):
    """The session's files cannot be written (a folder that is not writable, a full
    disk). The message names the file and what to do."""


class StageError(CascadeError):
    """A backend failed while serving a turn."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
