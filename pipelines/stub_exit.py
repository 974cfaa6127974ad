"""Ending a python-backend stub process quickly once Triton has unloaded its model."""
from __future__ import annotations

import atexit
import os
import sys


def exit_quickly() -> None:
    """On unload: end this stub process as soon as Python begins to shut down.

    Triton finalizes a model's instances one after another and waits for each stub process to exit. After a stub has
    imported torch, transformers and diffusers, the interpreter's teardown takes seconds (measured on this 2-core
    machine: objectclear_inpaint's two instances and flux_fill_inpaint's two unloaded in 16.9 s, 4.6 s without the
    teardown), longer with a CUDA context: eight GPU instances overran Triton's 30 s exit timeout on the H200. When
    atexit handlers run, the stub has already answered the server's finalize, so skipping the rest loses nothing: the
    operating system releases the process's memory, CUDA context and shared-memory mappings."""
    atexit.register(_exit_now)  # registered last, so it runs first


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
