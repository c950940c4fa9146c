import subprocess
import sys


def test_top_level_packages_import_in_a_fresh_interpreter():
    out = subprocess.run(
        [sys.executable, "-c", "import spotshift, flows, tasks, blocks, training; print('ok')"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
