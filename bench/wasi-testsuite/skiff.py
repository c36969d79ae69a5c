"""WASI testsuite runtime adapter for skiff's engine (`skiff-wasi-run`, see
bench/src/bin/skiff-wasi-run.rs). Set SKIFF_WASI_RUN to the binary's path."""
import os
import shlex
import subprocess
from typing import Dict, List, Optional, Tuple

RUNNER = shlex.split(os.getenv("SKIFF_WASI_RUN", "skiff-wasi-run"))


def get_name() -> str:
    return "skiff"


def get_version() -> str:
    return "engine"


def get_wasi_versions() -> List[str]:
    return ["wasm32-wasip1", "wasm32-wasip3"]


def get_wasi_worlds() -> List[str]:
    return ["wasi:cli/command", "wasi:http/service"]


def compute_argv(test_path: str,
                 args_env_root: Tuple[List[str], Dict[str, str], Optional[str]],
                 proposals: List[str],
                 wasi_world: str,
                 wasi_version: str) -> List[str]:
    del proposals, wasi_version  # the engine serves every version and proposal it knows
    args, env, root = args_env_root
    argv = list(RUNNER)
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if root:
        argv += ["--dir", f"{root}::/"]
    if wasi_world == "wasi:http/service":
        argv += ["--serve", "127.0.0.1:0"]
    return argv + [test_path] + args
