"""The engine's view of the host's folders: where a bind source must point for the Docker engine.

The deploy writes through the gateway's paths (its mounts). The engine that binds
folders into vLLM may see the same folders at other paths: Docker Desktop's
engine runs in its own VM, and a container talking to its socket gets no path
translation. The gateway's own mounts (`docker inspect`) say, for each folder it
sees (Destination), what the engine bound (Source): every bind the deploy asks
of the engine goes through `EngineView.source`. On plain Linux the two are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class EngineView:
    """Bind mounts of the container the deploy runs in, as (destination, source) pairs; None: no container."""

    mounts: tuple[tuple[str, str], ...] | None = None

    def mount_of(self, path: str) -> tuple[str, str] | None:
        """The deepest (destination, source) mount that holds `path`, or None."""
        target = PurePosixPath(path)
        best = None
        for destination, source in self.mounts or ():
            dest = PurePosixPath(destination)
            if (target == dest or dest in target.parents) and (best is None or len(dest.parts) > len(PurePosixPath(best[0]).parts)):
                best = (destination, source)
        return best

    def source(self, path: str) -> str | None:
        """The engine-side path of `path`, through the deepest mount that holds it; None if none does."""
        if self.mounts is None:
            return path  # the deploy runs where the engine resolves paths: they are the same
        mount = self.mount_of(path)
        if mount is None:
            return None
        rest = PurePosixPath(path).relative_to(mount[0])
        return str(PurePosixPath(mount[1]) / rest) if rest.parts else mount[1]

    def bind(self, path: str, inside: str | None = None, mode: str = "") -> str:
        """A `-v`/compose volume spec binding `path` (as the deploy sees it) at `inside` (default: the same path)."""
        source = self.source(path)
        if source is None:
            raise ValueError(f"{path} is not on a folder the engine can bind (no mount of the gateway holds it)")
        return f"{source}:{inside or path}" + (f":{mode}" if mode else "")


SAME_PATHS = EngineView()


def from_inspect(mounts: list[dict]) -> EngineView:
    """An EngineView from `docker inspect`'s Mounts of the gateway (only bind mounts carry host folders)."""
    return EngineView(tuple(
        (m["Destination"], m["Source"]) for m in mounts if m.get("Type") == "bind" and m.get("Source")
    ))
