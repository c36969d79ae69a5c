"""Port-forward with the official Python client (`kubernetes.stream.portforward`: a WebSocket with
`v4.channel.k8s.io` and `?ports=`) to the pod named on the command line: an HTTP GET on 8080 through
the forward, and the kubelet's error for a port nothing listens on (9). Prints the body, the error
and OK."""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward

config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
pf = portforward(api.connect_get_namespaced_pod_portforward, sys.argv[2], "default", ports="8080,9")
sock = pf.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    data += chunk
sock.close()
body = data.split(b"\r\n\r\n", 1)[1].decode()
print("body:", body.strip())
error = pf.error(9) or ""
print("error:", error)
pf.close()
assert body == "hello from skiff\n", body
assert "connection refused" in error, error
print("OK")
