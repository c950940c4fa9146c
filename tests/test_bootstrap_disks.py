"""training.bootstrap's disks: the job's data (HF_HOME, the datasets cache, TMPDIR) on the Deep
Learning AMI's instance-store mount, else on one untouched instance-store disk it formats, never on
an EBS volume or a disk in use, else on the root volume. The script runs under bash with stubs for
the commands that touch disks (mountpoint, findmnt, blkid, mkfs.ext4, mount), a fake /sys/block
tree and a fake /dev: nothing real is ever formatted or mounted."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from training.bootstrap import ScratchDisk, render_user_data

EBS = "Amazon Elastic Block Store              "
STORE = "Amazon EC2 NVMe Instance Storage        "  # sysfs pads the NVMe model with spaces


def stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class Machine:
    """A fake machine: its block devices in sysfs, which of them hold a file system or are mounted,
    whether the DLAMI's mount exists; every disk command's call is recorded in `calls`."""

    def __init__(self, root: Path, *, dlami_mounted: bool = False):
        self.root, self.bin, self.calls = root, root / "bin", root / "calls"
        self.sys, self.dev, self.dlami = root / "sys" / "block", root / "dev", root / "opt" / "dlami" / "nvme"
        for folder in (self.bin, self.sys, self.dev, self.dlami):
            folder.mkdir(parents=True)
        self.calls.touch()
        self.with_fs: list[str] = []
        self.mounted: list[str] = []
        self.dlami_mounted = dlami_mounted

    def disk(self, name: str, model: str, *, partitions: int = 0, holder: str | None = None,
             file_system: bool = False, mounted: bool = False) -> None:
        (self.sys / name / "device").mkdir(parents=True)
        (self.sys / name / "holders").mkdir()
        (self.sys / name / "device" / "model").write_text(model + "\n")
        for n in range(1, partitions + 1):
            (self.sys / name / f"{name}p{n}").mkdir()
        if holder:
            (self.sys / name / "holders" / holder).touch()
        (self.dev / name).touch()
        if file_system:
            self.with_fs.append(str(self.dev / name))
        if mounted:
            self.mounted.append(str(self.dev / name))

    def run(self, scratch: ScratchDisk, extra_env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """(the log, the trainer's HF_HOME, HF_DATASETS_CACHE and TMPDIR)."""
        record = f'echo "$(basename "$0") $*" >> {self.calls}\n'
        stub(self.bin / "mountpoint", record + f'[ "$2" = {self.dlami} ] && [ -n "{"1" if self.dlami_mounted else ""}" ]\n')
        stub(self.bin / "findmnt", record + "case \" " + " ".join(self.mounted) + ' " in *" $2 "*) exit 0;; esac\nexit 1\n')
        stub(self.bin / "blkid", record + "case \" " + " ".join(self.with_fs) + ' " in *" $2 "*) exit 0;; esac\nexit 2\n')
        stub(self.bin / "mkfs.ext4", record)
        stub(self.bin / "mount", record)
        env_out = self.root / "trainer-env"
        stub(self.bin / "python3", f'printf "%s\\n" "HF_HOME=$HF_HOME" "HF_DATASETS_CACHE=$HF_DATASETS_CACHE" '
                                   f'"TMPDIR=$TMPDIR" > {env_out}\n')
        log = self.root / "train.log"
        script = render_user_data("s3://b/jobs/j/spec.json", log_file=str(log), scratch=scratch, extra_env=extra_env)
        run = subprocess.run(["bash", "-c", script], env={"PATH": f"{self.bin}:/usr/bin:/bin"}, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, log.read_text()[-3000:]
        return log.read_text(), dict(line.split("=", 1) for line in env_out.read_text().splitlines())

    def scratch(self, **kwargs) -> ScratchDisk:
        return ScratchDisk(dlami_mount=str(self.dlami), mount=str(self.root / "opt" / "spotshift" / "nvme"),
                           root_dir=str(self.root / "opt" / "spotshift" / "data"), sys_block=str(self.sys),
                           dev_dir=str(self.dev), **kwargs)

    def called(self, command: str) -> list[str]:
        return [line for line in self.calls.read_text().splitlines() if line.split(" ", 1)[0] == command]


def expect_data_under(env: dict[str, str], folder: Path) -> None:
    assert env == {"HF_HOME": f"{folder}/hf", "HF_DATASETS_CACHE": f"{folder}/hf/datasets", "TMPDIR": f"{folder}/tmp"}
    assert all(Path(path).is_dir() for path in env.values())


def test_the_deep_learning_amis_instance_store_mount_takes_the_jobs_data(tmp_path):
    machine = Machine(tmp_path, dlami_mounted=True)
    machine.disk("nvme1n1", STORE)  # the DLAMI's own: never formatted again
    log, env = machine.run(machine.scratch(instance_store=True))
    expect_data_under(env, machine.dlami / "spotshift")
    assert machine.called("mkfs.ext4") == [] and machine.called("mount") == []
    assert f"model cache {machine.dlami}/spotshift/hf, scratch {machine.dlami}/spotshift/tmp (" in log


def test_without_the_mount_one_untouched_instance_store_disk_is_formatted_and_nothing_else(tmp_path):
    machine = Machine(tmp_path)
    machine.disk("nvme0n1", EBS)  # an EBS volume, blank: never formatted
    machine.disk("nvme1n1", STORE, file_system=True)
    machine.disk("nvme2n1", STORE, partitions=1)
    machine.disk("nvme3n1", STORE, mounted=True)
    machine.disk("nvme4n1", STORE, holder="md0")  # in a RAID
    machine.disk("nvme5n1", STORE)  # the one to use
    machine.disk("nvme6n1", STORE)  # one is enough
    log, env = machine.run(machine.scratch(instance_store=True))
    mount = machine.root / "opt" / "spotshift" / "nvme"
    expect_data_under(env, mount / "spotshift")
    assert machine.called("mkfs.ext4") == [f"mkfs.ext4 -q -L spotshift-data {machine.dev}/nvme5n1"]
    assert machine.called("mount") == [f"mount -o noatime {machine.dev}/nvme5n1 {mount}"]
    assert f"formatting the instance-store disk {machine.dev}/nvme5n1" in log
    probed = {line.split()[-1] for line in machine.called("blkid")}
    assert f"{machine.dev}/nvme0n1" not in probed  # an EBS volume is not even probed


def test_no_usable_instance_store_puts_the_data_on_the_root_volume_and_says_so(tmp_path):
    machine = Machine(tmp_path)
    machine.disk("nvme0n1", EBS)
    machine.disk("nvme1n1", STORE, file_system=True)
    log, env = machine.run(machine.scratch(instance_store=True))
    expect_data_under(env, machine.root / "opt" / "spotshift" / "data")
    assert machine.called("mkfs.ext4") == []
    assert "no instance store found: the job's data goes to the root volume, sized without it" in log


def test_a_launch_that_sized_the_root_volume_for_the_data_never_looks_for_an_instance_store(tmp_path):
    machine = Machine(tmp_path, dlami_mounted=True)
    machine.disk("nvme1n1", STORE)
    _, env = machine.run(machine.scratch(instance_store=False))
    expect_data_under(env, machine.root / "opt" / "spotshift" / "data")
    assert machine.calls.read_text() == ""  # not even mountpoint


def test_a_users_own_cache_folders_win(tmp_path):
    machine = Machine(tmp_path, dlami_mounted=True)
    _, env = machine.run(machine.scratch(instance_store=True), extra_env={"HF_HOME": str(tmp_path / "mine")})
    assert env["HF_HOME"] == str(tmp_path / "mine") and env["HF_DATASETS_CACHE"] == str(tmp_path / "mine" / "datasets")
    assert env["TMPDIR"] == f"{machine.dlami}/spotshift/tmp"


@pytest.mark.parametrize("field", ["dlami_mount", "mount", "root_dir", "sys_block", "dev_dir"])
def test_an_empty_folder_is_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=f"scratch.{field}"):
        render_user_data("s3://b/spec.json", scratch=ScratchDisk(**{field: ""}))


def test_hostile_folders_stay_one_shell_word(tmp_path):
    script = render_user_data("s3://b/spec.json", scratch=ScratchDisk(instance_store=True, root_dir="$(touch /tmp/x) a",
                                                                       mount="a'b", dlami_mount="`id`"))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "SCRATCH='$(touch /tmp/x) a'" in script and "mountpoint -q '`id`'" in script
