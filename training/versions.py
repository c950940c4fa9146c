"""The library versions a checkpoint records (torch, transformers, peft, datasets, the trainer) and
the resume check against the running ones: another transformers or peft minor version is refused."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from training.contract import CheckpointManifest, LibraryVersions
from training.exitcodes import PermanentFailure

log = logging.getLogger("training.versions")

TRAINER_DISTRIBUTIONS = ("spotshift_trainer", "spotshift")  # the instance's wheel, else the dev checkout
STRICT_LIBRARIES = ("transformers", "peft")  # another MAJOR.MINOR refuses the resume; a patch only warns
_RELEASE = re.compile(r"^(\d+)\.(\d+)")


def installed_version(*distributions: str) -> str | None:
    """The version of the first of `distributions` that is installed; None when none is."""
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


@lru_cache(maxsize=1)
def running_versions() -> LibraryVersions:
    """This process's libraries (read from the installed metadata: nothing is imported)."""
    return LibraryVersions(
        torch=installed_version("torch"), transformers=installed_version("transformers"),
        peft=installed_version("peft"), datasets=installed_version("datasets"),
        trainer=installed_version(*TRAINER_DISTRIBUTIONS))


def minor_release(text: str | None) -> tuple[int, int] | None:
    """(MAJOR, MINOR) of a version string ('5.26.1', '2.5.1+cu124', '5.26.0.dev0'), else None."""
    match = _RELEASE.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class VersionDifference:
    """One library whose version differs between the checkpoint and this trainer."""

    library: str
    written: str | None
    running: str | None
    refused: bool  # another MAJOR.MINOR of a strict library: the resume must not go on


def version_differences(written: LibraryVersions, running: LibraryVersions) -> list[VersionDifference]:
    """The libraries whose versions differ. Refused: both known, of a STRICT_LIBRARIES library, and
    of another MAJOR.MINOR; anything else (a patch, torch, datasets, the trainer, a library on one
    side only, an unparsable version) is a difference to warn about."""
    found = []
    for library in LibraryVersions.model_fields:
        old, new = getattr(written, library), getattr(running, library)
        if old == new:
            continue
        old_minor, new_minor = minor_release(old), minor_release(new)
        refused = library in STRICT_LIBRARIES and None not in (old_minor, new_minor) and old_minor != new_minor
        found.append(VersionDifference(library, old, new, refused))
    return found


class IncompatibleCheckpoint(PermanentFailure):
    """The checkpoint was written by another minor version of transformers or peft: a resume could
    silently change tokenization and the optimizer state's layout. Permanent: no instance with this
    environment can resume it."""

    def __init__(self, step: int, refused: list[VersionDifference]):
        self.step, self.refused = step, refused
        written = " and ".join(f"{d.library} {d.written}" for d in refused)
        running = " and ".join(f"{d.library} {d.running}" for d in refused)
        pins = ", ".join(f"{d.library}=={'.'.join(map(str, minor_release(d.written) or ()))}.*" for d in refused)
        super().__init__(
            f"checkpoint step-{step} was written with {written}; this trainer has {running}: a resume across "
            f"minor versions can change tokenization and optimizer state layout; resume it in an environment "
            f"with {pins}, or start the job afresh without its checkpoints")


def check_resume(manifest: CheckpointManifest, running: LibraryVersions | None = None) -> None:
    """Before anything of the checkpoint is loaded: raise IncompatibleCheckpoint for another minor
    version of transformers or peft; log a warning for any other difference, and a note when the
    checkpoint predates recorded versions."""
    if manifest.versions is None:
        log.warning("checkpoint step-%d records no library versions (written before they were recorded): "
                    "resuming without comparing them", manifest.step)
        return
    differences = version_differences(manifest.versions, running or running_versions())
    refused = [d for d in differences if d.refused]
    if refused:
        raise IncompatibleCheckpoint(manifest.step, refused)
    for d in differences:
        log.warning("checkpoint step-%d was written with %s %s; this trainer has %s %s: resuming", manifest.step,
                    d.library, d.written or "(not installed)", d.library, d.running or "(not installed)")
