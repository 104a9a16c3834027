"""What a registry source hands to the scheduler: one checkpoint, identified by its content."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlmodel import Session

Kind = Literal["text", "t2i"]


@dataclass(frozen=True)
class Checkpoint:
    id: str  # content digest ("sha256:..."), so a re-copied folder is the same checkpoint
    model: str  # the model (lineage) this checkpoint belongs to
    kind: Kind
    path: str  # local folder (or file) the loaders read
    source: str  # registry source id, e.g. "dir"
    parent: str | None = None  # checkpoint id or path of the parent/baseline, when lineage names one
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RegistrySource(Protocol):
    """A registry source (plugin kind "source", e.g. source:dir, source:mlflow) yields the
    checkpoints it has not reported before."""

    id: str

    def poll(self, session: Session) -> list[Checkpoint]:
        """Return checkpoints found since the last poll (each content digest once); `session` is the
        daemon's database session, where a source remembers what it has seen."""
        ...
