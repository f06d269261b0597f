//! The host ABI, version 1, in one table: every import of module `"edgefn"`
//! and every WASI preview 1 function, with its types, the capability it needs
//! and what it does, in one line.
//!
//! The loader's signature check and its "unknown import" list read this table;
//! the linker's host functions (`abi.rs`, `abi_state.rs`, `wasi.rs`) are tested against it.
//! The guest side is generated from it, between `BEGIN GENERATED` and `END
//! GENERATED` markers, by `cargo run --example generate-abi`: the Rust SDK's
//! extern block, `edgefn.h`, `edgefn.ts`, `check-abi.py`'s lists and ABI.md's
//! import tables. A test fails when a checked-in copy differs from what the
//! table generates. An import is added here and nowhere else by hand.

use wasmi::{FuncType, ValType};

/// A parameter's or result's type, as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    I32,
    I64,
    /// A pointer (i32) to bytes the host reads.
    In,
    /// A pointer (i32) to a buffer the host writes.
    Out,
}

/// Where in ABI.md an import is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Event,
    Acting,
    Upstream,
    State,
    Config,
}

/// One `"edgefn"` import.
#[derive(Debug)]
pub struct Import {
    pub name: &'static str,
    pub params: &'static [(&'static str, Ty)],
    pub result: Option<Ty>,
    /// The `[functions.allow]` key that bounds it, if any.
    pub capability: Option<&'static str>,
    pub group: Group,
    /// What it does, in one line.
    pub doc: &'static str,
}

use Ty::{In, Out, I32, I64};

/// Every import of module `"edgefn"`, in the order ABI.md lists them.
pub const EDGEFN: &[Import] = &[
    Import {
        name: "event_topic",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the MQTT topic the message arrived on (an HTTP request's path; empty for a timer's run)",
    },
    Import {
        name: "event_payload",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the message payload bytes (an HTTP request's body; empty for a timer's run)",
    },
    Import {
        name: "event_device",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the id of the configured device whose telemetry topic matched (an availability change: the device that changed); length 0 when none did",
    },
    Import {
        name: "event_reading",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the payload as the device's profile reads it: a flat JSON object in name order (`{\"humidity\":40.1,\"temperature\":22.6}`; snake_case names, the same for every profile: temperature, humidity, power, energy, on, brightness, ...); length 0 when the device has no profile or it could not read the payload",
    },
    Import {
        name: "device_reading",
        params: &[("device", In), ("device_len", I32), ("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: Some("read_devices"),
        group: Group::Event,
        doc: "the last value of every field the device's profile has read from it since the gateway started, as a flat JSON object like `event_reading`'s; -1 when nothing is known of it, -2 when the function may not read that device, else the copy rule",
    },
    Import {
        name: "event_trigger",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the trigger that fired, as the configuration writes it: a topic filter, or a timer's table (`{ every = \"10s\" }`)",
    },
    Import {
        name: "event_time_ms",
        params: &[],
        result: Some(I64),
        capability: None,
        group: Group::Event,
        doc: "when the gateway received the message (a timer's run: when it was due, before jitter), milliseconds since the Unix epoch",
    },
    Import {
        name: "event_kind",
        params: &[],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "what ran the function: 0 an MQTT message, 1 a timer, 2 an HTTP request, 3 a device going online or offline (payload `online` or `offline`, `event_device` its id) (added after v1's first release: modules that do not import it load as before)",
    },
    Import {
        name: "http_method",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "an HTTP request's method (GET, POST, ...); length 0 for other events",
    },
    Import {
        name: "http_param",
        params: &[("name", In), ("name_len", I32), ("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the value of the route's parameter `name` (`{room}` in `GET /rooms/{room}`); -1 when there is none",
    },
    Import {
        name: "http_header",
        params: &[("name", In), ("name_len", I32), ("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "the value of the request's header `name` (any case); -1 when it has none. Its credentials \
              (Authorization, Cookie, Proxy-Authorization) are never given",
    },
    Import {
        name: "http_query",
        params: &[("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Event,
        doc: "an HTTP request's query string, without its `?`; length 0 when it has none (`event_payload` is its body, `event_topic` its path)",
    },
    Import {
        name: "publish",
        params: &[
            ("topic", In),
            ("topic_len", I32),
            ("payload", In),
            ("payload_len", I32),
            ("qos", I32),
            ("retain", I32),
        ],
        result: Some(I32),
        capability: Some("publish"),
        group: Group::Acting,
        doc: "publish an MQTT message once the invocation succeeds (qos 0, 1 or 2; retain 0 or 1), dropped if not handed to the broker within limits.publish_expiry_ms; 0, or -2 when the function may not publish there",
    },
    Import {
        name: "publish_within",
        params: &[
            ("topic", In),
            ("topic_len", I32),
            ("payload", In),
            ("payload_len", I32),
            ("qos", I32),
            ("retain", I32),
            ("expiry_ms", I32),
        ],
        result: Some(I32),
        capability: Some("publish"),
        group: Group::Acting,
        doc: "`publish`, dropped and counted (commands_expired) unless handed to the broker within expiry_ms of the call (0: never expires); 0, or -2 when the function may not publish there",
    },
    Import {
        name: "command",
        params: &[("device", In), ("device_len", I32), ("action", In), ("action_len", I32)],
        result: Some(I32),
        capability: Some("publish"),
        group: Group::Acting,
        doc: "command a configured device by id: `on`, `off`, `toggle` or `set brightness N` (0-100), encoded by its profile into its topic and payload and published as `publish` does (QoS 1); 0, -2 when the function may not command it (`[functions.allow] devices` and `publish`), -6 when there is no such device, it has no profile or its profile cannot do that (logged)",
    },
    Import {
        name: "command_confirmed",
        params: &[("device", In), ("device_len", I32), ("action", In), ("action_len", I32), ("timeout_ms", I32)],
        result: Some(I32),
        capability: Some("publish"),
        group: Group::Acting,
        doc: "`command`, then waits for the device to confirm it (its state echo, as its profile reads it) for timeout_ms: the function is run again with event kind 4, payload `{\"id\":N,\"action\":\"on\",\"outcome\":\"confirmed\"}` (or `timed_out`, or `offline` when the device went offline first); returns the id N (> 0), or `command`'s -2 and -6",
    },
    Import {
        name: "http_respond",
        params: &[("status", I32), ("content_type", In), ("content_type_len", I32), ("body", In), ("body_len", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Acting,
        doc: "answer the HTTP request once the invocation succeeds (status 100 to 599; the last call wins; the body counts toward limits.max_publish_bytes); 0, or -1 when the event is not an HTTP request",
    },
    Import {
        name: "log",
        params: &[("level", I32), ("msg", In), ("msg_len", I32)],
        result: None,
        capability: None,
        group: Group::Acting,
        doc: "log a line under the function's name: 0 error, 1 warn, 2 info, 3 debug, 4 trace (higher values count as trace)",
    },
    Import {
        name: "upstream",
        params: &[("stream", In), ("stream_len", I32), ("payload", In), ("payload_len", I32)],
        result: Some(I32),
        capability: Some("upstream"),
        group: Group::Upstream,
        doc: "record a payload for durable upstream delivery on `stream`; 0, -1 when the gateway has no [upstream], -2 when the function may not write that stream, -3 while the outbox refuses records (full, or the disk nearly full)",
    },
    Import {
        name: "state_get",
        params: &[("key", In), ("key_len", I32), ("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::State,
        doc: "the function's state value under `key`; -1 when there is none, -5 when no state is kept here, else the copy rule",
    },
    Import {
        name: "state_set",
        params: &[("key", In), ("key_len", I32), ("value", In), ("value_len", I32)],
        result: Some(I32),
        capability: None,
        group: Group::State,
        doc: "sets `key` to `value` at once, for every instance; 0, -4 when refused (past limits.state_max_bytes, or the disk failed: counted in state_refused), -5 when no state is kept here",
    },
    Import {
        name: "state_delete",
        params: &[("key", In), ("key_len", I32)],
        result: Some(I32),
        capability: None,
        group: Group::State,
        doc: "deletes `key`; 1 when it was there, 0 when not, -4 when the disk failed, -5 when no state is kept here",
    },
    Import {
        name: "state_cas",
        params: &[
            ("key", In),
            ("key_len", I32),
            ("expected", In),
            ("expected_len", I32),
            ("value", In),
            ("value_len", I32),
        ],
        result: Some(I32),
        capability: None,
        group: Group::State,
        doc: "sets `key` to `value` only if it holds `expected` now, atomically across the function's instances (expected_len -1: absent; value_len -1: delete); 1 done, 0 not (read it again), -4 refused, -5 no state",
    },
    Import {
        name: "state_keys",
        params: &[("prefix", In), ("prefix_len", I32), ("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::State,
        doc: "the function's state keys starting with `prefix`, in order, each followed by a newline; -5 when no state is kept here, else the copy rule",
    },
    Import {
        name: "config_get",
        params: &[("key", In), ("key_len", I32), ("buf", Out), ("cap", I32)],
        result: Some(I32),
        capability: None,
        group: Group::Config,
        doc: "the configuration value for `key` as a string (TOML numbers and booleans in their TOML spelling); -1 when it is not set, else the copy rule",
    },
    Import {
        name: "now_ms",
        params: &[],
        result: Some(I64),
        capability: None,
        group: Group::Config,
        doc: "wall-clock time, milliseconds since the Unix epoch",
    },
];

/// Every WASI preview 1 function: name, parameters (`I` i32, `L` i64; every
/// one returns an errno but `proc_exit`), and what it does here.
pub const WASI: &[(&str, &str, &str)] = &[
    ("args_get", "II", "an empty list"),
    ("args_sizes_get", "II", "an empty list"),
    ("environ_get", "II", "an empty list"),
    ("environ_sizes_get", "II", "an empty list"),
    ("clock_res_get", "II", "realtime (0) and monotonic (1) clocks, in nanoseconds; other clocks `EINVAL` (28)"),
    ("clock_time_get", "ILI", "realtime (0) and monotonic (1) clocks, in nanoseconds; other clocks `EINVAL` (28)"),
    ("fd_advise", "ILLI", "`ENOSYS` (52): no files"),
    ("fd_allocate", "ILL", "`ENOSYS`: no files"),
    ("fd_close", "I", "`ENOSYS`: no files"),
    ("fd_datasync", "I", "`ENOSYS`: no files"),
    ("fd_fdstat_get", "II", "fds 1 and 2 are write-only character devices (terminals to libc's `isatty`, so stdio writes each line as it ends); any other fd `EBADF` (8)"),
    ("fd_fdstat_set_flags", "II", "`ENOSYS`: no files"),
    ("fd_fdstat_set_rights", "ILL", "`ENOSYS`: no files"),
    ("fd_filestat_get", "II", "`ENOSYS`: no files"),
    ("fd_filestat_set_size", "IL", "`ENOSYS`: no files"),
    ("fd_filestat_set_times", "ILLI", "`ENOSYS`: no files"),
    ("fd_pread", "IIILI", "`ENOSYS`: no files"),
    ("fd_prestat_get", "II", "`ENOSYS`: no preopened directories"),
    ("fd_prestat_dir_name", "III", "`ENOSYS`: no preopened directories"),
    ("fd_pwrite", "IIILI", "`ENOSYS`: no files"),
    ("fd_read", "IIII", "`ENOSYS`: no stdin, no files"),
    ("fd_readdir", "IIILI", "`ENOSYS`: no directories"),
    ("fd_renumber", "II", "`ENOSYS`: no files"),
    ("fd_seek", "ILII", "`ENOSYS`: no files"),
    ("fd_sync", "I", "`ENOSYS`: no files"),
    ("fd_tell", "II", "`ENOSYS`: no files"),
    ("fd_write", "IIII", "to fd 1 (stdout) and 2 (stderr): the function's log, one line per line (info, warn), within the log budgets; any other fd `EBADF`"),
    ("path_create_directory", "III", "`ENOSYS`: no directories"),
    ("path_filestat_get", "IIIII", "`ENOSYS`: no files"),
    ("path_filestat_set_times", "IIIILLI", "`ENOSYS`: no files"),
    ("path_link", "IIIIIII", "`ENOSYS`: no files"),
    ("path_open", "IIIIILLII", "`ENOSYS`: no files"),
    ("path_readlink", "IIIIII", "`ENOSYS`: no files"),
    ("path_remove_directory", "III", "`ENOSYS`: no directories"),
    ("path_rename", "IIIIII", "`ENOSYS`: no files"),
    ("path_symlink", "IIIII", "`ENOSYS`: no files"),
    ("path_unlink_file", "III", "`ENOSYS`: no files"),
    ("poll_oneoff", "IIII", "`ENOSYS`: nothing to wait on"),
    ("proc_exit", "I", "ends the invocation: 0 a success (what it published goes out), another code a failure with that code; the next event gets a fresh instance"),
    ("proc_raise", "I", "`ENOSYS`"),
    ("sched_yield", "", "returns at once"),
    ("random_get", "II", "the system's random numbers"),
    ("sock_accept", "III", "`ENOSYS`: no sockets"),
    ("sock_recv", "IIIIII", "`ENOSYS`: no sockets"),
    ("sock_send", "IIIII", "`ENOSYS`: no sockets"),
    ("sock_shutdown", "II", "`ENOSYS`: no sockets"),
];

fn val_type(ty: Ty) -> ValType {
    match ty {
        I64 => ValType::I64,
        I32 | In | Out => ValType::I32,
    }
}

/// The type an `"edgefn"` import has, if it is one.
pub fn edgefn_type(name: &str) -> Option<FuncType> {
    let import = EDGEFN.iter().find(|i| i.name == name)?;
    Some(FuncType::new(import.params.iter().map(|(_, t)| val_type(*t)), import.result.map(val_type)))
}

/// The type a WASI preview 1 function has, if it is one.
pub fn wasi_type(name: &str) -> Option<FuncType> {
    let (_, params, _) = WASI.iter().find(|(n, _, _)| *n == name)?;
    let params: Vec<ValType> = params.chars().map(|c| if c == 'L' { ValType::I64 } else { ValType::I32 }).collect();
    let results: &[ValType] = if name == "proc_exit" { &[] } else { &[ValType::I32] };
    Some(FuncType::new(params, results.iter().copied()))
}

/// The names of every `"edgefn"` import, for load errors.
pub fn edgefn_names() -> Vec<&'static str> {
    EDGEFN.iter().map(|i| i.name).collect()
}

/// The marker lines a generated block sits between.
pub const BEGIN: &str = "BEGIN GENERATED by `cargo run --example generate-abi` from runtime/src/host/abi_table.rs";
pub const END: &str = "END GENERATED";

/// A checked-in file with generated blocks: its path from the repository root,
/// its comment syntax, and each block's name and contents.
pub struct Generated {
    pub path: &'static str,
    pub comment: (&'static str, &'static str),
    pub blocks: Vec<(&'static str, String)>,
}

/// Everything the table generates.
pub fn generated() -> Vec<Generated> {
    let groups = [
        ("event", Group::Event),
        ("acting", Group::Acting),
        ("upstream", Group::Upstream),
        ("state", Group::State),
        ("config", Group::Config),
    ];
    vec![
        Generated { path: "functions/sdk/src/sys.rs", comment: ("// ", ""), blocks: vec![("imports", rust_sdk())] },
        Generated {
            path: "functions/include/edgefn.h",
            comment: ("/* ", " */"),
            blocks: vec![("imports", c_header())],
        },
        Generated {
            path: "functions/include/edgefn.ts",
            comment: ("// ", ""),
            blocks: vec![("imports", assemblyscript())],
        },
        Generated { path: "functions/scripts/check-abi.py", comment: ("# ", ""), blocks: vec![("imports", python())] },
        Generated {
            path: "functions/ABI.md",
            comment: ("<!-- ", " -->"),
            blocks: groups
                .iter()
                .map(|(name, group)| (*name, markdown(*group)))
                .chain([("wasi", markdown_wasi())])
                .collect(),
        },
    ]
}

fn rust_sdk() -> String {
    let mut out = String::new();
    for i in EDGEFN {
        let params: Vec<String> = i
            .params
            .iter()
            .map(|(n, t)| {
                let ty = match t {
                    I32 => "i32",
                    I64 => "i64",
                    In => "*const u8",
                    Out => "*mut u8",
                };
                format!("{n}: {ty}")
            })
            .collect();
        let result = match i.result {
            None => String::new(),
            Some(I64) => " -> i64".into(),
            Some(_) => " -> i32".into(),
        };
        out += &format!("        /// {}\n        pub fn {}({}){result};\n", i.doc, i.name, params.join(", "));
    }
    out
}

fn c_header() -> String {
    let mut out = String::new();
    for i in EDGEFN {
        let params: Vec<String> = i
            .params
            .iter()
            .map(|(n, t)| match t {
                I32 => format!("int {n}"),
                I64 => format!("long long {n}"),
                In => format!("const char *{n}"),
                Out => format!("char *{n}"),
            })
            .collect();
        let params = if params.is_empty() { "void".to_owned() } else { params.join(", ") };
        let result = match i.result {
            None => "void",
            Some(I64) => "long long",
            Some(_) => "int",
        };
        out += &format!(
            "/* {} */\nEDGEFN_IMPORT(\"{}\") {result} edgefn_{}({params});\n",
            i.doc.replace("*/", "* /"),
            i.name,
            i.name
        );
    }
    out
}

fn assemblyscript() -> String {
    let mut out = String::new();
    for i in EDGEFN {
        let params: Vec<String> = i
            .params
            .iter()
            .map(|(n, t)| {
                let ty = match t {
                    I32 => "i32",
                    I64 => "i64",
                    In | Out => "usize",
                };
                format!("{n}: {ty}")
            })
            .collect();
        let result = match i.result {
            None => "void",
            Some(I64) => "i64",
            Some(_) => "i32",
        };
        out += &format!(
            "/** {} */\n@external(\"edgefn\", \"{}\")\nexport declare function {}({}): {result};\n",
            i.doc.replace("*/", "* /"),
            i.name,
            i.name,
            params.join(", ")
        );
    }
    out
}

fn wasm_types(params: impl Iterator<Item = ValType>) -> String {
    params.map(|t| if t == ValType::I64 { "i64" } else { "i32" }).collect::<Vec<_>>().join(" ")
}

fn python() -> String {
    let mut out = String::from("IMPORTS = {\n");
    for i in EDGEFN {
        let ty = edgefn_type(i.name).expect("in the table");
        out += &format!(
            "    \"{}\": (\"{}\", \"{}\"),\n",
            i.name,
            wasm_types(ty.params().iter().copied()),
            wasm_types(ty.results().iter().copied())
        );
    }
    out += "}\n# WASI preview 1 (ABI.md \"WASI preview 1, a subset\"): every function, with its signature.\nWASI = {\n";
    for (name, _, _) in WASI {
        let ty = wasi_type(name).expect("in the table");
        out += &format!(
            "    \"{name}\": (\"{}\", \"{}\"),\n",
            wasm_types(ty.params().iter().copied()),
            wasm_types(ty.results().iter().copied())
        );
    }
    out + "}\n"
}

fn signature(ty: &FuncType) -> String {
    let list = |types: &[ValType]| types.iter().map(|t| format!("{t:?}").to_lowercase()).collect::<Vec<_>>().join(", ");
    let results = if ty.results().is_empty() { "()".to_owned() } else { list(ty.results()) };
    format!("({}) -> {results}", list(ty.params()))
}

fn markdown(group: Group) -> String {
    let mut out = String::from("| import | type | meaning |\n|---|---|---|\n");
    for i in EDGEFN.iter().filter(|i| i.group == group) {
        let ty = edgefn_type(i.name).expect("in the table");
        let names: Vec<&str> = i.params.iter().map(|(n, _)| *n).collect();
        let capability = i.capability.map(|c| format!(" (`[functions.allow] {c}`)")).unwrap_or_default();
        out += &format!("| `{}({})` | `{}` | {}{capability} |\n", i.name, names.join(", "), signature(&ty), i.doc);
    }
    out
}

fn markdown_wasi() -> String {
    let mut out = String::from("| function | type | what it does here |\n|---|---|---|\n");
    for (name, _, doc) in WASI {
        let ty = wasi_type(name).expect("in the table");
        out += &format!("| `{name}` | `{}` | {doc} |\n", signature(&ty));
    }
    out
}

/// `text` with each named block between its markers replaced by `blocks`;
/// an error names a block whose markers are missing.
pub fn fill(text: &str, file: &Generated) -> Result<String, String> {
    let (open, close) = file.comment;
    let mut out = text.to_owned();
    for (name, contents) in &file.blocks {
        let begin = format!("{open}{BEGIN} ({name}){close}\n");
        // The end marker, found as text: its line may be indented.
        let end = format!("{open}{END} ({name}){close}");
        let start = out.find(&begin).ok_or_else(|| format!("{}: no line {begin:?}", file.path))? + begin.len();
        let stop = out[start..].find(&end).ok_or_else(|| format!("{}: no line {end:?}", file.path))? + start;
        // From the start of the end marker's line: it may be indented.
        let stop = out[..stop].rfind('\n').map_or(start, |i| (i + 1).max(start));
        out.replace_range(start..stop, contents);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_checked_in_copies_are_what_the_table_generates() {
        for file in generated() {
            let text = std::fs::read_to_string(repo().join(file.path)).unwrap();
            let expected = fill(&text, &file).unwrap();
            assert!(
                text == expected,
                "{} differs from what runtime/src/host/abi_table.rs generates: run `cargo run --example generate-abi`",
                file.path
            );
        }
    }

    #[test]
    fn every_import_in_the_table_links_with_its_type() {
        // A module importing every "edgefn" and WASI function at the table's
        // types loads: the loader checks them against the table, the linker
        // must define each with that type.
        let wat_type = |ty: FuncType| {
            let list =
                |ts: &[ValType]| ts.iter().map(|t| format!("{t:?}").to_lowercase()).collect::<Vec<_>>().join(" ");
            format!("(param {}) (result {})", list(ty.params()), list(ty.results()))
        };
        let mut imports = String::new();
        for i in EDGEFN {
            imports +=
                &format!("(import \"edgefn\" \"{}\" (func {}))\n", i.name, wat_type(edgefn_type(i.name).unwrap()));
        }
        for (name, _, _) in WASI {
            imports += &format!(
                "(import \"wasi_snapshot_preview1\" \"{name}\" (func {}))\n",
                wat_type(wasi_type(name).unwrap())
            );
        }
        let wat = format!(
            "(module {imports} (memory (export \"memory\") 1)
               (func (export \"edgefn_abi_version\") (result i32) i32.const 1)
               (func (export \"handle\") (result i32) i32.const 0))"
        );
        let loader = std::sync::Arc::new(crate::host::Loader::new().with_upstream(true));
        let module = loader.compile("every-import.wasm", &wat::parse_str(&wat).unwrap()).unwrap();
        let spec = crate::config::FunctionSpec {
            name: "every-import".into(),
            module: crate::config::ModuleSource::File("every-import.wasm".into()),
            triggers: vec![],
            limits: Default::default(),
            config: Default::default(),
            allow: Default::default(),
        };
        let mut instance = crate::host::FunctionInstance::new(loader, module, std::sync::Arc::new(spec)).unwrap();
        let event = std::sync::Arc::new(crate::event::Event::timer(1));
        instance.invoke(event, "{ start = true }".into()).unwrap();
    }
}
