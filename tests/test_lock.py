"""requirements/lock.txt is what runs: the venv holds exactly its versions, pyproject.toml's ranges
admit every pin, and requirements/trainer.txt (what the instance installs) is the lock's own pins
for the trainer's requirements, without torch."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from spotshift.aws.trainer_artifact import trainer_requirements

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(path: Path) -> dict[str, tuple[Version, str | None, int]]:
    """name -> (version, marker, number of hashes) of a uv-compiled requirements file."""
    out: dict[str, tuple[Version, str | None, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        if match := LINE.match(line):
            name = canonicalize_name(match[1])
            out[name] = (Version(match[2]), match[3], 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, marker, hashes = out[name]
            out[name] = (version, marker, hashes + 1)
    return out


LOCK = pins(REPO / "requirements" / "lock.txt")
TRAINER = pins(REPO / "requirements" / "trainer.txt")


def applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


def test_every_pin_is_hashed():
    assert LOCK and TRAINER
    assert not [name for name, (_, _, hashes) in (LOCK | TRAINER).items() if hashes == 0]


def installed_in_the_venv() -> dict[str, Version]:
    """What pip installed into the environment's site-packages. Not importlib.metadata over sys.path:
    importing pkg_resources (parliament does) appends setuptools/_vendor to sys.path, whose vendored
    packaging and wheel dist-infos would then shadow the installed ones, depending on test order."""
    site_dirs = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonicalize_name(d.metadata["Name"]): Version(d.version)
            for d in importlib.metadata.distributions(path=site_dirs)}


def test_the_venv_holds_exactly_the_locks_versions():
    installed = installed_in_the_venv()
    wrong = {name: (str(version), str(installed.get(name))) for name, (version, marker, _) in LOCK.items()
             if applies(marker) and (name not in installed or installed[name].public != version.public)}
    assert not wrong, f"installed versions differ from requirements/lock.txt (run make venv): {wrong}"
    assert set(installed) - set(LOCK) <= {"spotshift"}, set(installed) - set(LOCK)


def test_pyproject_ranges_admit_every_pin():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if requirement.marker is None or requirement.marker.evaluate():
            assert name in LOCK, f"{text} is not in requirements/lock.txt: run make lock"
            assert requirement.specifier.contains(LOCK[name][0], prereleases=True), (text, str(LOCK[name][0]))


def test_the_trainer_installs_the_locks_pins_for_its_own_requirements_and_never_torch():
    assert "torch" not in TRAINER
    for name in (canonicalize_name(Requirement(r).name) for r in trainer_requirements(REPO / "pyproject.toml")):
        assert name in TRAINER, name
    differ = {name: (str(TRAINER[name][0]), str(LOCK[name][0])) for name in TRAINER
              if name in LOCK and TRAINER[name][0] != LOCK[name][0]}
    assert not differ, differ
