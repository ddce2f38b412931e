"""One root for every error siporch raises; the CLI maps them to exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field


class SiporchError(Exception):
    """Base of every expected error. `exit_code` is what the CLI exits with."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


@dataclass(frozen=True)
class Problem:
    """One finding about the model: where it is, what is wrong, what is allowed."""

    file: str
    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{self.severity}: {where}: {self.message}"


@dataclass
class ModelError(SiporchError):
    """The trunk model is invalid. Carries every problem found in one run."""

    problems: list[Problem] = field(default_factory=list)
    exit_code: int = 2

    def __post_init__(self) -> None:
        errors = [p for p in self.problems if p.severity == "error"]
        SiporchError.__init__(self, f"the trunk model has {len(errors)} error(s)")

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class LabError(SiporchError):
    """The lab could not be built, inspected or torn down."""


class DeployError(SiporchError):
    """A deploy or rollback failed."""

    exit_code = 1


class MonitorError(SiporchError):
    """A host could not be reached or refused the credentials."""
