"""WASI testsuite runtime adapter for skiff's containerd shim: each test is a container run with
`ctr run` on `io.containerd.skiff.v1` (bench/wasi-testsuite/ctr-run.sh). Set SKIFF_CTR_ADDRESS to
the socket of a containerd that has containerd-shim-skiff-v1 on its PATH."""
import os
import socket
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RUNNER = str(Path(__file__).with_name("ctr-run.sh"))


def get_name() -> str:
    return "skiff-shim"


def get_version() -> str:
    return "ctr run"


def get_wasi_versions() -> List[str]:
    return ["wasm32-wasip1", "wasm32-wasip3"]


def get_wasi_worlds() -> List[str]:
    return ["wasi:cli/command", "wasi:http/service"]


def get_timeout_seconds() -> float:
    # A container start through containerd and the shim, not only the guest.
    return 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compute_argv(test_path: str,
                 args_env_root: Tuple[List[str], Dict[str, str], Optional[str]],
                 proposals: List[str],
                 wasi_world: str,
                 wasi_version: str) -> List[str]:
    del proposals, wasi_version
    args, env, root = args_env_root
    argv = [RUNNER]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if root:
        argv += ["--root", str(root)]
    if wasi_world == "wasi:http/service":
        argv += ["--serve", str(free_port())]
    return argv + ["--", test_path] + args
