"""Started by every Python subprocess of a test session (tests/aws_call_recorder.py puts this folder
on PYTHONPATH): once the process imports botocore, its AWS calls are recorded too (the local
backend's trainers, a CLI a test runs). A process that never imports botocore pays nothing."""

import os
import sys

_LOG = os.environ.get("SPOTSHIFT_TEST_AWS_CALL_LOG")


class _RecordOnceBotocoreLoads:
    def find_spec(self, name, path=None, target=None):
        if name != "botocore.handlers":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _install()
        spec.loader.exec_module = exec_module
        return spec


def _install():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "aws_call_recorder.py"
    spec = importlib.util.spec_from_file_location("spotshift_test_aws_call_recorder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(_LOG)


if _LOG:
    sys.meta_path.insert(0, _RecordOnceBotocoreLoads())
