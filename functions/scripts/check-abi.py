#!/usr/bin/env python3
"""Checks that wasm modules keep to ABI.md (version 1): lists each module's imports
and exports and fails if an import is not an `edgefn` ABI import or a WASI preview 1
function with its exact signature, or a required export is missing or mistyped.

    python3 scripts/check-abi.py target/wasm32-unknown-unknown/release/*.wasm

Extra exports are reported but allowed (rustc always exports the `__data_end` and
`__heap_base` globals from wasm32 cdylibs)."""

import sys

IMPORTS = {
    "event_topic": ("i32 i32", "i32"),
    "event_payload": ("i32 i32", "i32"),
    "event_device": ("i32 i32", "i32"),
    "event_trigger": ("i32 i32", "i32"),
    "event_time_ms": ("", "i64"),
    "event_kind": ("", "i32"),
    "publish": ("i32 i32 i32 i32 i32 i32", "i32"),
    "upstream": ("i32 i32 i32 i32", "i32"),
    "log": ("i32 i32 i32", ""),
    "config_get": ("i32 i32 i32 i32", "i32"),
    "now_ms": ("", "i64"),
}
# WASI preview 1 (ABI.md "WASI preview 1, a subset"): every function, with its signature.
WASI = {
    "args_get": ("i32 i32", "i32"),
    "args_sizes_get": ("i32 i32", "i32"),
    "environ_get": ("i32 i32", "i32"),
    "environ_sizes_get": ("i32 i32", "i32"),
    "clock_res_get": ("i32 i32", "i32"),
    "clock_time_get": ("i32 i64 i32", "i32"),
    "fd_advise": ("i32 i64 i64 i32", "i32"),
    "fd_allocate": ("i32 i64 i64", "i32"),
    "fd_close": ("i32", "i32"),
    "fd_datasync": ("i32", "i32"),
    "fd_fdstat_get": ("i32 i32", "i32"),
    "fd_fdstat_set_flags": ("i32 i32", "i32"),
    "fd_fdstat_set_rights": ("i32 i64 i64", "i32"),
    "fd_filestat_get": ("i32 i32", "i32"),
    "fd_filestat_set_size": ("i32 i64", "i32"),
    "fd_filestat_set_times": ("i32 i64 i64 i32", "i32"),
    "fd_pread": ("i32 i32 i32 i64 i32", "i32"),
    "fd_prestat_get": ("i32 i32", "i32"),
    "fd_prestat_dir_name": ("i32 i32 i32", "i32"),
    "fd_pwrite": ("i32 i32 i32 i64 i32", "i32"),
    "fd_read": ("i32 i32 i32 i32", "i32"),
    "fd_readdir": ("i32 i32 i32 i64 i32", "i32"),
    "fd_renumber": ("i32 i32", "i32"),
    "fd_seek": ("i32 i64 i32 i32", "i32"),
    "fd_sync": ("i32", "i32"),
    "fd_tell": ("i32 i32", "i32"),
    "fd_write": ("i32 i32 i32 i32", "i32"),
    "path_create_directory": ("i32 i32 i32", "i32"),
    "path_filestat_get": ("i32 i32 i32 i32 i32", "i32"),
    "path_filestat_set_times": ("i32 i32 i32 i32 i64 i64 i32", "i32"),
    "path_link": ("i32 i32 i32 i32 i32 i32 i32", "i32"),
    "path_open": ("i32 i32 i32 i32 i32 i64 i64 i32 i32", "i32"),
    "path_readlink": ("i32 i32 i32 i32 i32 i32", "i32"),
    "path_remove_directory": ("i32 i32 i32", "i32"),
    "path_rename": ("i32 i32 i32 i32 i32 i32", "i32"),
    "path_symlink": ("i32 i32 i32 i32 i32", "i32"),
    "path_unlink_file": ("i32 i32 i32", "i32"),
    "poll_oneoff": ("i32 i32 i32 i32", "i32"),
    "proc_exit": ("i32", ""),
    "proc_raise": ("i32", "i32"),
    "sched_yield": ("", "i32"),
    "random_get": ("i32 i32", "i32"),
    "sock_accept": ("i32 i32 i32", "i32"),
    "sock_recv": ("i32 i32 i32 i32 i32 i32", "i32"),
    "sock_send": ("i32 i32 i32 i32 i32", "i32"),
    "sock_shutdown": ("i32 i32", "i32"),
}
REQUIRED = {"edgefn_abi_version": ("", "i32"), "handle": ("", "i32")}
OPTIONAL = {"init": ("", "i32")}
VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}
KINDS = ["func", "table", "memory", "global", "tag"]


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        self.pos += 1
        return self.data[self.pos - 1]

    def uleb(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result

    def name(self):
        n = self.uleb()
        self.pos += n
        return self.data[self.pos - n : self.pos].decode()

    def limits(self):
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()


def parse(data):
    """Returns (imports, exports): lists of (module, name, kind, signature) and (name, kind, signature)."""
    if data[:8] != b"\0asm\x01\0\0\0":
        raise ValueError("not a wasm module")
    r, types, funcs, imports, exports = Reader(data), [], [], [], []
    r.pos = 8
    while r.pos < len(data):
        section, size = r.byte(), r.uleb()
        end = r.pos
        if section == 1:
            for _ in range(r.uleb()):
                assert r.byte() == 0x60, "unexpected type form"
                params = " ".join(VALTYPES[r.byte()] for _ in range(r.uleb()))
                results = " ".join(VALTYPES[r.byte()] for _ in range(r.uleb()))
                types.append((params, results))
        elif section == 2:
            for _ in range(r.uleb()):
                module, name, kind = r.name(), r.name(), r.byte()
                sig = None
                if kind == 0:
                    sig = types[r.uleb()]
                    funcs.append(sig)
                elif kind == 1:
                    r.byte()
                    r.limits()
                elif kind == 2:
                    r.limits()
                elif kind == 3:
                    r.byte()
                    r.byte()
                imports.append((module, name, KINDS[kind], sig))
        elif section == 3:
            funcs.extend(types[r.uleb()] for _ in range(r.uleb()))
        elif section == 7:
            for _ in range(r.uleb()):
                name, kind, index = r.name(), r.byte(), r.uleb()
                exports.append((name, KINDS[kind], funcs[index] if kind == 0 else None))
        r.pos = end + size
    return imports, exports


def show(sig):
    return f"({sig[0].replace(' ', ', ')}) -> ({sig[1]})" if sig else ""


def check(path):
    imports, exports = parse(open(path, "rb").read())
    problems = []
    print(f"{path}\n  imports:")
    for module, name, kind, sig in imports:
        print(f"    {module}.{name}: {kind} {show(sig)}")
        known = {"edgefn": IMPORTS, "wasi_snapshot_preview1": WASI}.get(module, {})
        if kind != "func" or known.get(name) != sig:
            problems.append(f"import {module}.{name} {show(sig)} is not an ABI v1 import")
    print("  exports:")
    kinds = {name: (kind, sig) for name, kind, sig in exports}
    for name, kind, sig in exports:
        note = "" if name in REQUIRED or name in OPTIONAL or name == "memory" else "  (extra)"
        print(f"    {name}: {kind} {show(sig)}{note}")
    if kinds.get("memory", (None,))[0] != "memory":
        problems.append("export `memory` is missing")
    for name, sig in REQUIRED.items():
        if kinds.get(name) != ("func", sig):
            problems.append(f"export `{name}` {show(sig)} is missing or mistyped")
    for name, sig in OPTIONAL.items():
        if name in kinds and kinds[name] != ("func", sig):
            problems.append(f"export `{name}` must be {show(sig)}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    return not problems


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    results = [check(path) for path in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)
