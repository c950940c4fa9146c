"""training.bootstrap: the rendered user-data is valid bash, logs, passes hostile values through verbatim,
never installs the project by name from a package index, and gives the trainer torchrun's longer
SIGTERM grace (checked against the real torchrun)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.bootstrap import SHUTDOWN_GRACE_S, render_user_data

HOSTILE = [
    "s3://b/jobs/x/spec.json",
    "it's \"quoted\"",
    "$(touch /tmp/pwned-spotshift)",
    "`id`",
    "a; rm -rf /",
    "line1\nline2",
    "tab\there & | > < * ? ~ {a,b} \\",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_rendered_script_is_valid_bash_for_hostile_values(value):
    script = render_user_data(value, python=value, log_file=value, extra_env={"X": value},
                              trainer_wheel_uri="s3://" + value, log_uri="s3://" + value, hub_token_secret=value)
    assert script.startswith("#!/bin/bash\n")
    assert "set -uo pipefail" in script and "trap finish EXIT" in script
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def write_stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("value", HOSTILE)
def test_stub_python_receives_the_values_unchanged(value, tmp_path):
    bin_dir, calls_dir = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls_dir.mkdir()
    # the stub records each call's arguments NUL-separated (newlines inside a value survive) and
    # the exported value; the trainer call exits 75 like a checkpointed trainer
    write_stub(bin_dir / "python3", f"""n=$(ls {calls_dir} | wc -l)
for a in "$@"; do printf '%s\\0' "$a"; done > {calls_dir}/call-$n
printf '%s' "$SPOTSHIFT_X" > {tmp_path}/env-value
if [ "$2" = torch.distributed.run ]; then exit 75; fi
""")
    log_file = tmp_path / "logs" / "train.log"
    script = render_user_data(value, log_file=str(log_file), extra_env={"SPOTSHIFT_X": value}, gpus=2)
    run = subprocess.run(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 75  # the trainer's exit code is the script's
    train_call = (calls_dir / "call-0").read_text().split("\0")[:-1]
    assert train_call == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training",
                          "--spec", value]
    assert not (calls_dir / "call-1").exists()  # no wheel given: nothing is installed
    assert (tmp_path / "env-value").read_text() == value
    assert not Path("/tmp/pwned-spotshift").exists()
    log = log_file.read_text()
    assert "spotshift bootstrap: start" in log and "trainer exited with 75" in log
    assert run.stdout == ""  # everything went to the log file


def test_the_wheel_comes_from_the_bucket_and_nothing_is_looked_up_by_name():
    script = render_user_data("s3://bucket/jobs/j1/spec.json", trainer_wheel_uri="s3://bucket/artifacts/ab/t.whl")
    assert 'aws s3 cp "$WHEEL_URI"' in script and "WHEEL_URI=s3://bucket/artifacts/ab/t.whl" in script
    assert "spotshift[" not in script and "--upgrade" not in script
    assert "LOG_FILE=/var/log/spotshift-train.log" in script
    assert "--nproc_per_node=1 -m training --spec s3://bucket/jobs/j1/spec.json" in script


def test_the_hub_token_is_read_at_run_time_and_never_written_into_the_script():
    script = render_user_data("s3://b/jobs/j/spec.json", hub_token_secret="spotshift/hf-token")
    assert "get-secret-value --secret-id spotshift/hf-token" in script
    assert "hf_" not in script and "echo \"$HF_TOKEN" not in script


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "AWS_SESSION_TOKEN", "DB_PASSWORD"])
def test_secret_looking_env_is_refused(name):
    with pytest.raises(ValueError, match="instance profile"):
        render_user_data("s3://b/spec.json", extra_env={name: "x"})


@pytest.mark.parametrize("kwargs, field", [({"spec_uri": ""}, "spec_uri"), ({"spec_uri": "s3://b", "python": ""}, "python"),
                                           ({"spec_uri": "s3://b", "extra_env": {"BAD-NAME": "1"}}, "BAD-NAME"),
                                           ({"spec_uri": "s3://b", "trainer_wheel_uri": "https://x/t.whl"}, "trainer_wheel_uri"),
                                           ({"spec_uri": "s3://b", "gpus": 0}, "gpus")])
def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        render_user_data(**kwargs)


@pytest.mark.parametrize("extra_env, grace", [({}, str(SHUTDOWN_GRACE_S)),
                                              ({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "600"}, "600")])
def test_torchrun_gets_the_shutdown_grace_and_the_users_own_value_wins(extra_env, grace, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_stub(bin_dir / "python3", f'printf %s "$TORCH_ELASTIC_SHUTDOWN_TIMEOUT" > {tmp_path}/grace\n')
    script = render_user_data("s3://b/jobs/j/spec.json", log_file=str(tmp_path / "train.log"), extra_env=extra_env)
    run = subprocess.run(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30)
    assert run.returncode == 0
    assert (tmp_path / "grace").read_text() == grace


# a worker that needs `delay` seconds after a SIGTERM to finish (as a checkpoint upload would), then
# says so in `done` and exits 75
SLOW_STOPPING_WORKER = """
import signal, sys, time
from pathlib import Path
ready, done, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
ready.touch()
while not stop:
    time.sleep(0.05)
time.sleep(delay)
done.touch()
sys.exit(75)
"""


def stop_torchrun(tmp_path: Path, grace: str, delay: float) -> bool:
    """Start the real torchrun with one slow-stopping worker, SIGTERM torchrun alone (it passes the
    signal on); True if the worker finished its stop before torchrun killed it."""
    worker, ready, done = tmp_path / "worker.py", tmp_path / f"ready-{grace}", tmp_path / f"done-{grace}"
    worker.write_text(SLOW_STOPPING_WORKER)
    env = {**os.environ, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": grace, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                             str(worker), str(ready), str(done), str(delay)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return done.exists()


def test_the_installed_torchrun_waits_as_long_as_the_user_data_asks(tmp_path):
    """The variable the user-data sets is the one torchrun reads: with 1 s the worker is killed in
    the middle of its 6 s stop (5 s of margin for a loaded machine); with the user-data's grace it
    finishes."""
    assert not stop_torchrun(tmp_path, "1", delay=6.0)
    assert stop_torchrun(tmp_path, str(SHUTDOWN_GRACE_S), delay=6.0)


def test_every_pip_line_of_the_user_data_installs_only_pinned_hash_checked_requirements():
    script = render_user_data("s3://bucket/jobs/j1/spec.json", trainer_wheel_uri="s3://bucket/artifacts/ab/t.whl")
    pip_lines = [line for line in script.replace("\\\n", " ").splitlines() if " pip install" in line]
    assert pip_lines, script
    for line in pip_lines:
        args = line.split(" pip install", 1)[1].replace(")", " ").split()
        assert {"--no-deps", "--require-hashes"} <= set(args), line
        named = [a for a in args if not a.startswith("-")]
        assert named == ["requirements.txt"] and args[args.index("requirements.txt") - 1] == "-r", line
    assert '"${WHEEL_URI%/*}/requirements.txt"' in script  # the pins come from the job's bucket, beside the wheel


def test_the_log_upload_loop_runs_every_interval_and_finish_stops_it_before_the_last_upload():
    script = render_user_data("s3://b/jobs/j/spec.json", log_uri="s3://b/jobs/j/logs/", log_upload_seconds=0.5)
    loop = script[script.index("trap finish EXIT\n("):script.index("LOG_UPLOAD_PID=$!")]
    assert "sleep 0.5 &" in loop and 'aws s3 cp "$LOG_FILE" s3://b/jobs/j/logs/"$INSTANCE_ID.log"' in loop
    assert "|| true" in loop and "kill -0 $$" in loop and ") </dev/null &" in loop
    finish = script[script.index("finish() {"):script.index("trap finish EXIT")]
    kill, final = finish.index('kill "$LOG_UPLOAD_PID"'), finish.index('aws s3 cp "$LOG_FILE"')
    assert kill < finish.index('wait "$LOG_UPLOAD_PID"') < final
    assert script.index("trap finish EXIT") < script.index("LOG_UPLOAD_PID=$!") < script.index("set -e\nPYTHON=")
    assert "sleep 60 &" in render_user_data("s3://b/spec.json", log_uri="s3://b/logs/")  # the default: every minute
    assert "LOG_UPLOAD_PID=$!" not in render_user_data("s3://b/spec.json")  # no log_uri, no loop


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), True, "60"])
def test_a_log_upload_interval_that_is_not_a_positive_number_is_refused(seconds):
    with pytest.raises(ValueError, match="log_upload_seconds"):
        render_user_data("s3://b/spec.json", log_uri="s3://b/logs/", log_upload_seconds=seconds)


def run_with_stub_aws(tmp_path: Path, trainer_seconds: float, **kwargs) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The script with a stub `aws` that keeps each upload's copy of the log (named by the time it
    was made) and a trainer that sleeps; (the run, the copies in upload order)."""
    bin_dir, copies = tmp_path / "bin", tmp_path / "copies"
    bin_dir.mkdir()
    copies.mkdir()
    write_stub(bin_dir / "aws", f'cp "$3" {copies}/"$(date +%s%N)-$$"\n')
    write_stub(bin_dir / "python3", f"sleep {trainer_seconds}\n")
    script = render_user_data("s3://b/jobs/j/spec.json", log_uri="s3://b/jobs/j/logs/",
                              log_file=str(tmp_path / "train.log"), **kwargs)
    run = subprocess.run(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    return run, [path.read_text() for path in sorted(copies.iterdir())]


def test_the_loop_uploads_while_the_trainer_runs_and_the_final_upload_is_the_last(tmp_path):
    run, uploads = run_with_stub_aws(tmp_path, 2.0, log_upload_seconds=0.2)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""
    assert len(uploads) >= 3, uploads  # several copies while the trainer slept, then the final one
    assert "starting trainer" in uploads[0] and "exit 0" not in uploads[0]
    assert uploads[-1] == (tmp_path / "train.log").read_text()
    assert uploads[-1].splitlines()[-1].startswith("spotshift bootstrap: exit 0 ")
    count = len(list((tmp_path / "copies").iterdir()))
    time.sleep(0.6)
    assert len(list((tmp_path / "copies").iterdir())) == count  # the loop is gone with the script


def test_the_loop_does_not_hold_the_script_open(tmp_path):
    """With the default minute between uploads, a trainer that ends at once ends the script at once."""
    started = time.monotonic()
    run, uploads = run_with_stub_aws(tmp_path, 0)
    assert run.returncode == 0 and time.monotonic() - started < 10
    assert len(uploads) == 1 and "exit 0" in uploads[0]
