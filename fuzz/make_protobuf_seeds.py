#!/usr/bin/env python3
"""Writes the decode_protobuf seed corpus: request bodies as kubectl's typed clients send them
(`k8s\\0` + a runtime.Unknown envelope around the object's message), encoded by hand from the
field numbers of Kubernetes' generated.proto files. Run from fuzz/: python3 make_protobuf_seeds.py"""
import os


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    """A length-delimited field (bytes, string or message) or a varint field (int)."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def msg(*parts):
    return b"".join(parts)


def string_map(num, entries):
    return b"".join(field(num, msg(field(1, k), field(2, v))) for k, v in entries.items())


def meta(name, labels=None):
    return msg(field(1, name), field(3, "default"), string_map(11, labels or {"app": name}))


def body(api_version, kind, obj):
    envelope = msg(field(1, msg(field(1, api_version), field(2, kind))), field(2, obj))
    return b"k8s\x00" + envelope


container = msg(field(1, "web"), field(2, "busybox:1"), field(3, "sleep"), field(4, "1d"),
                field(6, msg(field(1, "http"), field(3, 8080), field(4, "TCP"))))
pod_spec = msg(field(2, container), field(3, "Always"))
seeds = {
    "configmap": body("v1", "ConfigMap", msg(field(1, meta("cfg")), string_map(2, {"a": "1", "b": "two"}))),
    "pod": body("v1", "Pod", msg(field(1, meta("web-0")), field(2, pod_spec))),
    "deployment": body("apps/v1", "Deployment", msg(
        field(1, meta("web")),
        field(2, msg(field(1, 2), field(2, string_map(1, {"app": "web"})),
                     field(3, msg(field(1, meta("", {"app": "web"})), field(2, pod_spec))))))),
    "service": body("v1", "Service", msg(
        field(1, meta("web")),
        field(2, msg(field(1, msg(field(1, "http"), field(2, "TCP"), field(3, 80),
                                  field(4, msg(field(1, 1), field(3, "http"))))),
                     string_map(2, {"app": "web"}), field(4, "ClusterIP"))))),
    "namespace": body("v1", "Namespace", msg(field(1, msg(field(1, "team-a"))))),
}
os.makedirs("corpus/decode_protobuf", exist_ok=True)
for name, data in seeds.items():
    with open(f"corpus/decode_protobuf/{name}.pb", "wb") as f:
        f.write(data)
