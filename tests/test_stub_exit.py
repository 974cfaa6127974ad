"""A stub that has answered Triton's finalize skips the interpreter's teardown, where a process that imported
torch, transformers and diffusers spends seconds (pipelines/stub_exit.py)."""
from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import atexit, sys, time
atexit.register(lambda: (time.sleep(5), print("teardown ran")))  # a library's slow cleanup, registered on import
from pipelines.stub_exit import exit_quickly
exit_quickly()  # what the models' finalize does
print("finalized", flush=True)
"""


def test_exit_quickly_skips_the_teardown_registered_before_it():
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["finalized"]  # the slow handler never ran
