"""Typed errors. The library raises these; only ``difftrt.cli`` turns them into messages and exit codes."""

from __future__ import annotations


class DifftrtError(Exception):
    """Base class: a problem the user can fix. The message is one line: what, what was expected, the fix."""

    exit_code = 1


class UsageError(DifftrtError):
    """An argument or option value is invalid (steps < 1, non-finite guidance, unknown name...)."""

    exit_code = 2


class ShapeError(UsageError):
    """Arrays handed to an engine do not fit its spec (rank, fixed size, dtype) or its profile's ranges."""


class ArtifactError(DifftrtError):
    """An input file or folder is missing, unreadable, corrupt or not what it claims to be."""


class ConfigError(DifftrtError):
    """A configuration (model, scheduler, tokenizer) is malformed or unsupported."""


class ValidationError(DifftrtError):
    """An exported model disagrees with its PyTorch reference beyond tolerance."""


class EngineError(DifftrtError):
    """A backend failed while running a component (out of memory, a kernel error...)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception from a library (its type's name when it has no message), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class DependencyError(DifftrtError):
    """An optional dependency (torch, onnx, tensorrt...) is needed for this operation but is missing."""


class OutputError(DifftrtError):
    """An output path cannot be written."""


class TrainingError(DifftrtError):
    """Training cannot go on (non-finite loss, a resume checkpoint from another configuration...)."""


class ResourceError(DifftrtError):
    """The machine lacks what an operation needs (memory for a model), found before the work starts."""
