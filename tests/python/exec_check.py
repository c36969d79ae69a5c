"""Exec with the official Python client (`kubernetes.stream.stream`: a WebSocket with
`v4.channel.k8s.io`) into the pod and container named on the command line: stdout and stderr kept
apart, the exit code from the error channel, stdin fed to the command, and stdout alone (no stderr
stream asked for). Prints what it got and OK."""

import sys

from kubernetes import client, config
from kubernetes.stream import stream

config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
pod, container = sys.argv[2], sys.argv[3]


def run(command, stdin=None, stderr=True):
    resp = stream(api.connect_get_namespaced_pod_exec, pod, "default", container=container,
                  command=command, stderr=stderr, stdin=stdin is not None, stdout=True, tty=False,
                  _preload_content=False)
    if stdin is not None:
        resp.write_stdin(stdin)
    resp.run_forever(timeout=30)
    out, err = resp.read_stdout(), resp.read_stderr()
    code = resp.returncode
    resp.close()
    return out, err, code


out, err, code = run(["sh", "-c", "echo out; echo err >&2; exit 3"])
print("split:", repr(out), repr(err), code)
assert (out, err, code) == ("out\n", "err\n", 3), (out, err, code)

out, err, code = run(["sh", "-c", "read line; echo \"$line\""], stdin="from python\n")
print("stdin:", repr(out), code)
assert (out, code) == ("from python\n", 0), (out, err, code)
# stdout only: what the command writes to stderr is dropped, the exec still runs.
out, err, code = run(["sh", "-c", "echo only-out; echo dropped >&2"], stderr=False)
print("stdout only:", repr(out), repr(err), code)
assert (out, err, code) == ("only-out\n", "", 0), (out, err, code)
print("OK")
