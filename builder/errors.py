"""Every error builder raises: one base class, an exit code per kind.

Library code only raises; the CLI turns an error into one line (plus a hint) and its exit code.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any


class BuilderError(Exception):
    """Base of every error builder reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_json(self) -> dict[str, Any]:
        """What --json prints on stdout for a failed command."""
        data: dict[str, Any] = {"error": self.message, "kind": type(self).__name__, "exit_code": self.exit_code}
        if self.hint:
            data["hint"] = self.hint
        return data


class UsageError(BuilderError):
    """Bad input on the command line: a malformed arch, an unknown option value."""

    exit_code = 2


class FarmUnanswered(UsageError):
    """The farm's scheduler did not answer (down, unreachable, a wrong URL): `builder farm status`
    fails on it; a build warns and compiles here alone."""


class RecipeError(BuilderError):
    """A recipe that does not exist, does not parse, or does not have the asked version."""

    exit_code = 3


class ToolchainError(BuilderError):
    """No toolkit for the asked CUDA, an arch it cannot target, a torch/CUDA mismatch."""

    exit_code = 4


class RequirementError(BuilderError):
    """The target does not meet what the recipe requires (cuda range, archs, torch range)."""

    exit_code = 5


class SourceError(BuilderError):
    """A source that cannot be fetched, fails its sha256 check, or is unsafe to extract."""

    exit_code = 6


class PatchError(BuilderError):
    """A patch that does not apply."""

    exit_code = 7


class BuildError(BuilderError):
    """A build command that failed; carries the first compiler error line and the log path, and a
    known cause (builder/diagnosis.py) when the output shows one."""

    exit_code = 8

    def __init__(
        self,
        message: str,
        *,
        command: list[str] | None = None,
        returncode: int | None = None,
        first_error: str | None = None,
        log_path: Path | None = None,
        hint: str | None = None,
        cause: str | None = None,
        cause_line: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command
        self.returncode = returncode
        self.first_error = first_error
        """The first line that looks like an error (process.first_error_line): the raw evidence."""
        self.log_path = log_path
        self.cause = cause
        """A known cause the output shows (builder/diagnosis.py), named before the raw line."""
        self.cause_line = cause_line
        """The line of the output that shows `cause`."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "cause": self.cause, "cause_line": self.cause_line,
                "first_error": self.first_error, "log": str(self.log_path) if self.log_path else None}


class CacheError(BuilderError):
    """A cache entry that is missing, corrupt (sha256 mismatch) or cannot be written."""

    exit_code = 9


class InstallError(BuilderError):
    """An install refused (torch differs from the wheel's) or failed."""

    exit_code = 10


class VerifyError(BuilderError):
    """An installed build that does not import, or holds other cubins than asked for."""

    exit_code = 11

    def __init__(self, message: str, *, hint: str | None = None, output_tail: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output_tail = output_tail or []
        """The last lines the failing check wrote (its stderr, else its stdout)."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "output_tail": self.output_tail}


class EnvironmentSetupError(BuilderError):
    """A build environment (venv with a pinned torch) that could not be made."""

    exit_code = 12


class FileAccessError(BuilderError):
    """A file or folder builder cannot read or write: permissions, a full disk, a path that is not
    a directory."""

    exit_code = 13

    @classmethod
    def from_os_error(cls, exc: OSError) -> FileAccessError:
        """The one line for an OSError no stage turned into an error of its own."""
        where = exc.filename if exc.filename is not None else ""
        message = f"{exc.strerror or exc}" + (f": {where}" if where != "" else "")
        if exc.filename2 is not None:
            message += f" -> {exc.filename2}"
        return cls(message, hint=_OS_ERROR_HINTS.get(exc.errno or 0, "--debug shows where it happened"))


_MOVE_CACHE = "point --cache (or BUILDER_CACHE_DIR, cache-dir in `builder config`) at another directory"
_OS_ERROR_HINTS = {
    errno.ENOSPC: f"the disk is full: free space (`builder cache gc`, `df -h`), or {_MOVE_CACHE}",
    errno.EDQUOT: f"the disk quota is used up: free space, or {_MOVE_CACHE}",
    errno.EACCES: f"builder may not write or read there: fix its permissions, or {_MOVE_CACHE}",
    errno.EPERM: f"builder may not write or read there: fix its permissions, or {_MOVE_CACHE}",
    errno.EROFS: f"that file system is read-only: {_MOVE_CACHE}",
    errno.ENOTDIR: "a part of that path is a file, not a directory: name a directory",
    errno.EISDIR: "that path is a directory where a file was expected",
}


class SettingsError(BuilderError):
    """A config file or BUILDER_* variable with an unknown key or a value of the wrong type."""

    exit_code = 14


class CommandTimeout(BuilderError):
    """A short query (nvcc --version, a probe of an interpreter, an import check) that did not finish
    in its time."""

    exit_code = 15
