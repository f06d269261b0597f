//! The `edgefn` command as a user meets it: check, invoke, demo, --help.

mod support;

use std::process::Output;

use support::gateway::edgefn_command;
use support::repo_root;

fn edgefn(args: &[&str]) -> Output {
    edgefn_command().args(args).env_remove("RUST_LOG").output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn every_shipped_configuration_checks_clean() {
    let dir = repo_root().join("device-configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = edgefn(&["check", path.to_str().unwrap()]);
        assert!(out.status.success(), "{} does not check: {}", path.display(), text(&out.stderr));
        assert!(text(&out.stdout).contains(": ok ("), "{}", text(&out.stdout));
        checked += 1;
    }
    assert!(checked >= 2, "expected the greenhouse and demo configurations, found {checked}");
}

#[test]
fn check_refuses_a_bad_configuration_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gateway]\nid = \"g\"\n\n[[functions]]\nname = \"f\"\nmodule = \"builtin:threshold\"\ntriggers = [\"a/#/b\"]\n").unwrap();
    let out = edgefn(&["check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:7: functions[0].triggers[0]", path.display())), "{err}");
}

#[test]
fn check_refuses_a_module_that_breaks_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.wasm"), wat::parse_str("(module)").unwrap()).unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"g\"\n[[functions]]\nname = \"f\"\nmodule = \"empty.wasm\"\ntriggers = [\"a\"]\n",
    )
    .unwrap();
    let out = edgefn(&["check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("empty.wasm: does not export `memory`"), "{}", text(&out.stderr));
}

#[test]
fn invoke_shows_what_a_function_did() {
    let out = edgefn(&[
        "invoke",
        "--module",
        "builtin:threshold",
        "--topic",
        "zigbee2mqtt/greenhouse-climate",
        "--payload",
        r#"{"temperature":29.5}"#,
        "--device",
        "greenhouse-climate",
        "--set",
        "field=temperature",
        "--set",
        "above=28",
        "--set",
        "below=25",
        "--set",
        "command_topic=cmnd/{device}/POWER",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("publish  cmnd/greenhouse-climate/POWER qos=1 retain=false ON"), "{stdout}");
    assert!(stdout.contains("result   ok"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("fuel     ")), "{stdout}");
}

/// The built-in `threshold` reads its `field` as a path: the devices' own
/// payloads, nested as Tasmota, Shelly Gen2, TTN, an older Zigbee2MQTT and
/// ESPHome send them.
#[test]
fn the_builtin_threshold_reads_its_field_as_a_path_into_real_device_payloads() {
    for (payload, field) in [
        (
            r#"{"Time":"2024-03-01T10:00:00","AM2301":{"Temperature":29.5,"Humidity":40.1},"TempUnit":"C"}"#,
            "AM2301.Temperature",
        ),
        (r#"{"id":0,"temperature:0":{"id":0,"tC":29.5,"tF":85.1}}"#, "temperature:0.tC"),
        (
            r#"{"end_device_ids":{"device_id":"gh"},"uplink_message":{"decoded_payload":{"t":29.5}}}"#,
            "uplink_message.decoded_payload.t",
        ),
        (r#"{"temperature":"29.50","battery":"100.00"}"#, "temperature"),
        ("29.5", ""),
    ] {
        let field = format!("field={field}");
        let out = edgefn(&[
            "invoke",
            "--module",
            "builtin:threshold",
            "--topic",
            "tele/greenhouse/SENSOR",
            "--payload",
            payload,
            "--device",
            "greenhouse",
            "--set",
            &field,
            "--set",
            "above=28",
            "--set",
            "below=25",
            "--set",
            "command_topic=cmnd/{device}/POWER",
        ]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{payload}: {stdout}{}", text(&out.stderr));
        assert!(stdout.contains("publish  cmnd/greenhouse/POWER qos=1 retain=false ON"), "{payload} {field}: {stdout}");
    }
}

#[test]
fn invoke_repeat_runs_the_event_on_one_instance_and_shows_what_a_later_event_costs() {
    let fuel = |stdout: &str, label: &str| -> u64 {
        let line = stdout.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label:?}:\n{stdout}"));
        line[label.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let args = |repeat: &'static str| {
        [
            "invoke",
            "--module",
            "builtin:window-average",
            "--topic",
            "t",
            "--payload",
            r#"{"temperature":21.5}"#,
            "--set",
            "field=temperature",
            "--set",
            "window=5",
            "--repeat",
            repeat,
        ]
    };
    let once = text(&edgefn(&args("1")).stdout);
    let out = edgefn(&args("4"));
    let four = text(&out.stdout);
    assert!(out.status.success(), "{four}");
    // The instance kept its state: the fourth reading averages four.
    assert!(four.contains(r#""n":4"#), "{four}");
    // The first event's fuel is what a single run costs; later ones skip translating the code.
    assert_eq!(fuel(&four, "first    "), fuel(&once, "fuel     "), "{once}{four}");
    assert!(fuel(&four, "fuel     ") < fuel(&four, "first    "), "{four}");
    assert!(!once.contains("first    "), "{once}");
}

#[test]
fn invoke_reports_a_failing_function_and_exits_non_zero() {
    let out = edgefn(&["invoke", "--module", "builtin:threshold", "--topic", "t", "--payload", "{}"]);
    assert!(!out.status.success());
    // The example's init refuses the missing config, naming the key.
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("field"), "{all}");
}

#[test]
fn the_demo_sends_commands_for_occupancy_changes_in_its_first_seconds() {
    let out = edgefn(&["demo", "--duration", "6s", "--speed", "6000"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // The dataset's office empties at its 17th reading: the light must go off.
    assert!(stdout.contains(r#"command zigbee2mqtt/office-light/set {"state":"ON"}"#), "{stdout}");
    assert!(stdout.contains(r#"command zigbee2mqtt/office-light/set {"state":"OFF"}"#), "{stdout}");
    assert!(stdout.contains("edgefn demo finished"), "{stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    // 6 s at 6000x is one reading every 10 ms: the banner says 600, not the whole dataset.
    assert!(stdout.contains("replaying 600 of the "), "{stdout}");
}

#[test]
fn help_names_every_command() {
    let out = edgefn(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    // Each command on a line of its own under "Commands:", not a word
    // somewhere in another's description.
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
        .collect();
    for command in [
        "run",
        "check",
        "demo",
        "invoke",
        "new",
        "deploy",
        "remove",
        "functions",
        "devices",
        "bundle",
        "keygen",
        "token",
    ] {
        assert!(commands.contains(&command), "{command} missing from: {commands:?}\n{help}");
    }
    let out = edgefn(&["run", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("/etc/edgefn/gateway.toml"));
}

#[test]
fn invoke_shows_upstream_records() {
    let out = edgefn(&[
        "invoke",
        "--module",
        "builtin:window-average",
        "--topic",
        "plant/line-3/press-7/values",
        "--payload",
        r#"{"pressure_bar":180.5}"#,
        "--device",
        "press-7",
        "--set",
        "field=pressure_bar",
        "--set",
        "upstream_stream=pressure-avg",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("upstream pressure-avg ")).unwrap_or_else(|| panic!("{stdout}"));
    let record: serde_json::Value = serde_json::from_str(line.trim_start_matches("upstream pressure-avg ")).unwrap();
    assert_eq!(record["avg"], 180.5);
    assert_eq!(record["device"], "press-7");
}

#[test]
fn check_takes_config_like_run_and_names_the_key_of_a_wrong_type() {
    let good = repo_root().join("device-configs/greenhouse.toml");
    let out = edgefn(&["check", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong_type.toml");
    std::fs::write(&path, "[gateway]\nid = \"g\"\n\n[broker]\nport = \"18831\"\n").unwrap();
    let out = edgefn(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("wrong_type.toml:5: broker.port: expected an integer, found the string \"18831\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_names_every_function_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.wasm"), wat::parse_str("(module)").unwrap()).unwrap();
    std::fs::write(dir.path().join("notes.wasm"), "a text file saved as .wasm").unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"g\"\n\
         [[functions]]\nname = \"first\"\nmodule = \"empty.wasm\"\ntriggers = [\"a\"]\n\
         [[functions]]\nname = \"good\"\nmodule = \"builtin:threshold\"\ntriggers = [\"b\"]\n\
         [functions.config]\nfield = \"t\"\nabove = 2\nbelow = 1\ncommand_topic = \"c/x\"\n\
         [[functions]]\nname = \"second\"\nmodule = \"notes.wasm\"\ntriggers = [\"c\"]\n",
    )
    .unwrap();
    let out = edgefn(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("2 of 3 functions do not load"), "{err}");
    assert!(err.contains("function first: module ") && err.contains("does not export `memory`"), "{err}");
    assert!(
        err.contains("function second: module ") && err.contains("does not start with the WebAssembly header"),
        "{err}"
    );
    // One line a problem, no debug output or byte arrays.
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn a_module_over_the_size_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // 5,000 bytes of anything: the limit is checked before the bytes are looked at.
    std::fs::write(dir.path().join("big.wasm"), vec![0u8; 5_000]).unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"g\"\nmax_module_bytes = 4096\n\
         [[functions]]\nname = \"big\"\nmodule = \"big.wasm\"\ntriggers = [\"a\"]\n",
    )
    .unwrap();
    let out = edgefn(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("function big: module ") && err.contains("it is 5000 bytes, over gateway.max_module_bytes (4096)"),
        "{err}"
    );
}

#[test]
fn log_lines_carry_journald_priorities_when_stderr_is_the_journal() {
    let out = edgefn_command()
        .args(["demo", "--duration", "1s", "--log", "info,rumqttd=off"])
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let info = stderr.lines().find(|l| l.contains("embedded MQTT broker listening")).expect("an info line");
    assert!(info.starts_with("<6>"), "{stderr}");
    assert!(stderr.lines().all(|l| l.starts_with('<')), "a line without its priority:\n{stderr}");
}

/// `edgefn new`, then the project's own test: build it, run it through `edgefn invoke`.
fn scaffold_and_test(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = edgefn(&["new", "fan", "--lang", lang, "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let project = dir.path().join("fan");
    let test = std::process::Command::new(project.join("test.sh"))
        .env("EDGEFN", support::gateway::edgefn_bin())
        .output()
        .unwrap();
    let said = format!("{}{}", text(&test.stdout), text(&test.stderr));
    assert!(test.status.success(), "{said}");
    assert!(said.contains("publish  cmnd/fan/POWER") && said.contains("ok: fan commands the fan"), "{said}");
    // A second `new` into the same place is refused, not an overwrite.
    let again = edgefn(&["new", "fan", "--lang", lang, "--dir", dir.path().to_str().unwrap()]);
    assert!(!again.status.success() && text(&again.stderr).contains("already exists"));
}

#[cfg_attr(
    any(edgefn_missing_clang, edgefn_missing_wasi_libc),
    ignore = "needs clang and wasi-libc: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 (bash .ci/run runs it)"
)]
#[test]
fn new_c_project_builds_and_runs_through_invoke() {
    if !support::require_wasi_libc() {
        return;
    }
    scaffold_and_test("c");
}

/// Whether the wasm32 target is here, which the README's first commands do
/// without; `.ci/run` adds it and sets EDGEFN_REQUIRE_WASM32, and then it must be.
fn wasm32_target() -> bool {
    if !support::rust_target_installed("wasm32-unknown-unknown") {
        assert!(std::env::var_os("EDGEFN_REQUIRE_WASM32").is_none(), "the wasm32-unknown-unknown target is missing");
        eprintln!("SKIPPED: the wasm32-unknown-unknown target is not installed; .ci/run adds it and runs this test");
        return false;
    }
    true
}

#[cfg_attr(edgefn_missing_npm, ignore = "needs npm: apt-get install nodejs npm (bash .ci/run runs it)")]
#[test]
fn new_assemblyscript_project_builds_and_runs_through_invoke() {
    // npm fetches the compiler from the registry on the first build.
    if support::require_tool("npm", &["/usr/bin/npm"]).is_none() {
        return;
    }
    scaffold_and_test("assemblyscript");
}

#[cfg_attr(
    edgefn_missing_wasm32_unknown_unknown,
    ignore = "needs the wasm32-unknown-unknown target: rustup target add wasm32-unknown-unknown"
)]
#[test]
fn new_rust_project_builds_and_runs_through_invoke() {
    if wasm32_target() {
        scaffold_and_test("rust");
    }
}

#[test]
fn the_readme_shows_the_function_edgefn_new_scaffolds_in_each_language() {
    // The scaffold tests build and run these files; the README must show them as they are.
    let readme = std::fs::read_to_string(support::repo_root().join("README.md")).unwrap();
    for (fence, template) in [("rust", "runtime/src/scaffold/rust/lib.rs"), ("c", "runtime/src/scaffold/c/function.c")]
    {
        let shown = readme
            .split(&format!("```{fence}\n"))
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("README.md shows no ```{fence} block"));
        let scaffolded = std::fs::read_to_string(support::repo_root().join(template)).unwrap();
        assert_eq!(shown, scaffolded, "README.md's {fence} function differs from {template}");
    }
}

#[test]
fn invoke_runs_a_bundle_with_its_allow_list_and_triggers_as_the_gateway_would() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("echo.wasm");
    std::fs::write(&module, support::wasm::echo_to("cmnd/heater/POWER")).unwrap();
    let bundle = dir.path().join("echo-1.0.0.edgefn");
    let out = edgefn(&[
        "bundle",
        module.to_str().unwrap(),
        "--name",
        "echo",
        "--version",
        "1.0.0",
        "--trigger",
        "zigbee2mqtt/+",
        "--allow-publish",
        "cmnd/fan/POWER",
        "--limit",
        "fuel=200000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let invoke = |module: &std::path::Path, topic: &str| {
        edgefn(&["invoke", "--module", module.to_str().unwrap(), "--topic", topic, "--payload", "ON"])
    };

    // The bare module publishes anywhere: invoke has no allow list for it.
    let out = invoke(&module, "zigbee2mqtt/greenhouse");
    assert!(text(&out.stdout).contains("publish  cmnd/heater/POWER"), "{}", text(&out.stdout));

    // Its bundle may publish only to cmnd/fan/POWER: denied, as deployed it would be,
    // under the bundle's own fuel.
    let out = invoke(&bundle, "zigbee2mqtt/greenhouse");
    let said = text(&out.stdout);
    assert!(said.contains("bundle   echo 1.0.0"), "{said}");
    assert!(said.contains("denied   publish to cmnd/heater/POWER"), "{said}");
    assert!(said.contains("publish  (nothing)") && said.contains(" of 200000"), "{said}");

    // A topic none of its triggers matches would never run it on a gateway.
    let out = invoke(&bundle, "tele/greenhouse/SENSOR");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("none of the bundle's triggers matches it (zigbee2mqtt/+)"),
        "{}",
        text(&out.stderr)
    );
}

#[cfg_attr(
    edgefn_missing_wasm32_unknown_unknown,
    ignore = "needs the wasm32-unknown-unknown target: rustup target add wasm32-unknown-unknown"
)]
#[test]
fn a_rust_function_that_panics_logs_the_panic_message() {
    if !wasm32_target() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = edgefn(&["new", "picky", "--lang", "rust", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let project = dir.path().join("picky");
    std::fs::write(
        project.join("src/lib.rs"),
        "#![no_std]\nuse edgefn_sdk::{event, Error};\n\nfn on_reading() -> Result<(), Error> {\n    \
         let mut buf = [0u8; 64];\n    let n = event::payload(&mut buf)?.len();\n    \
         panic!(\"no temperature in {n} bytes\");\n}\nedgefn_sdk::handler!(on_reading);\n",
    )
    .unwrap();
    let build = std::process::Command::new(project.join("build.sh")).output().unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let module = project.join("picky.wasm");
    let out = edgefn(&["invoke", "--module", module.to_str().unwrap(), "--topic", "t", "--payload", "{\"x\":1}"]);
    assert!(!out.status.success());
    let said = text(&out.stdout);
    assert!(said.contains("log      error panicked at src/lib.rs:7: no temperature in 7 bytes"), "{said}");
}

#[test]
fn a_c_project_without_clang_or_wasi_libc_says_how_to_install_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = edgefn(&["new", "fan", "--lang", "c", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let build = dir.path().join("fan/build.sh");
    let run = |cc: &std::path::Path| std::process::Command::new(&build).env("CC", cc).output().unwrap();

    let out = run(&dir.path().join("no-such-clang"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found. Debian/Ubuntu: sudo apt-get install clang lld wasi-libc"),
        "{}",
        text(&out.stderr)
    );

    // A clang that cannot find wasi-libc's headers (as Debian's clang alone).
    let bare = dir.path().join("bare-clang");
    std::fs::write(&bare, "#!/bin/sh\necho \"fatal error: 'bits/libc-header-start.h' file not found\" >&2\nexit 1\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(&bare);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains("has no wasi-libc") && said.contains("apt-get install wasi-libc"), "{said}");
}

#[test]
fn token_prints_a_token_and_the_table_that_lets_the_gateway_check_it() {
    let out = edgefn(&["token", "grafana", "--scope", "read", "--scope", "deploy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let token = printed.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "{printed}");
    let table = &printed[printed.find("[[api.tokens]]").unwrap()..];
    // The table is the SHA-256 of the token the client gets, never the token.
    let sha =
        std::process::Command::new("sh").args(["-c", &format!("printf %s {token} | sha256sum")]).output().unwrap();
    let sha = text(&sha.stdout).split_whitespace().next().unwrap().to_owned();
    assert!(table.contains(&format!("sha256 = \"{sha}\"")) && !table.contains(&token), "{printed}");
    assert!(table.contains("scopes = [\"read\", \"deploy\"]"), "{printed}");
    // As printed, it goes under [api] and checks clean.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, format!("[gateway]\nid = \"g\"\n\n[api]\n{table}")).unwrap();
    let out = edgefn(&["check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // Another run, another token.
    assert_ne!(text(&edgefn(&["token", "grafana"]).stdout), printed);
}

#[test]
fn invoke_runs_a_function_as_an_http_request_and_shows_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("room.wasm");
    std::fs::write(&module, support::wasm::http_echo()).unwrap();
    let module = module.to_str().unwrap();
    let out = edgefn(&[
        "invoke",
        "--module",
        module,
        "--http",
        "POST /rooms/kitchen/note",
        "--route",
        "POST /rooms/{room}/note",
        "--payload",
        "window open",
    ]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("answer   201 text/plain kitchen:window open\n"), "{said}");
    let out = edgefn(&["invoke", "--module", module, "--http", "POST /rooms/kitchen/note", "--route", "POST /rooms"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does not take it"), "{}", text(&out.stderr));
    let out = edgefn(&["invoke", "--module", module, "--http", "POST /x", "--topic", "a/b"]);
    assert!(!out.status.success() && text(&out.stderr).contains("cannot be used with"), "{}", text(&out.stderr));
}

/// The serverless hello world, functions/examples/hello, built with the SDK and
/// run on HTTP requests.
#[test]
fn the_hello_example_answers_http_requests_by_name() {
    if !wasm32_target() {
        return;
    }
    let functions = support::repo_root().join("functions");
    let built = std::process::Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "hello", "--target", "wasm32-unknown-unknown"])
        .current_dir(&functions)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert_hello_answers(&functions.join("target/wasm32-unknown-unknown/release/hello.wasm"), false);
}

/// The serverless hello world's answers, the same in every language: asked
/// through `edgefn invoke --http` on `module`.
fn assert_hello_answers(module: &std::path::Path, escapes: bool) {
    let ask = |request: &str| {
        let out = edgefn(&["invoke", "--module", module.to_str().unwrap(), "--http", request, "--route", "GET /hello"]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let said = text(&out.stdout);
        said.lines().find_map(|l| l.strip_prefix("answer   ")).unwrap_or_else(|| panic!("no answer: {said}")).to_owned()
    };
    assert_eq!(ask("GET /hello?name=Ada"), r#"200 application/json {"message":"Hello, Ada!"}"#);
    assert_eq!(ask("GET /hello?lang=en&name=Grace"), r#"200 application/json {"message":"Hello, Grace!"}"#);
    assert_eq!(ask("GET /hello"), r#"400 application/json {"error":"give a name: /hello?name=Ada"}"#);
    if escapes {
        assert_eq!(ask(r#"GET /hello?name=A"B"#), r#"200 application/json {"message":"Hello, A\"B!"}"#, "escaped");
    }
}

/// functions/examples/c-reading: edgefn.h's helpers in plain C, no libc. The
/// number at a path in each project's payload, the device from a topic level,
/// and a 64 KB payload read whole.
#[test]
#[cfg_attr(edgefn_missing_clang, ignore = "needs clang: apt-get install clang lld (bash .ci/run runs it)")]
fn the_c_header_reads_each_projects_payload_by_path_and_a_64_kb_one_whole() {
    let Some(clang) = support::require_tool("clang", &["/usr/bin/clang"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("reading.wasm");
    let script = repo_root().join("functions/examples/c-reading/build.sh");
    let out = std::process::Command::new("bash").arg(&script).arg(&wasm).env("CC", &clang).output().unwrap();
    assert!(out.status.success(), "building the C function failed:\n{}", text(&out.stderr));
    let run = |topic: &str, payload: &str, path: &str, level: &str| -> String {
        let file = dir.path().join("payload");
        std::fs::write(&file, payload).unwrap();
        let (module, file) = (wasm.to_str().unwrap(), file.to_str().unwrap());
        let (path, level) = (format!("path={path}"), format!("level={level}"));
        let out = edgefn(&[
            "invoke",
            "--module",
            module,
            "--topic",
            topic,
            "--payload-file",
            file,
            "--set",
            &path,
            "--set",
            &level,
            "--set",
            "topic=readings/c",
        ]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let said = text(&out.stdout);
        said.lines()
            .find_map(|l| l.strip_prefix("publish  readings/c qos=1 retain=false "))
            .unwrap_or("none")
            .to_owned()
    };
    let tasmota = r#"{"Time":"2026-12-07T10:00:00","AM2301":{"Temperature":22.6,"Humidity":40.1},"TempUnit":"C"}"#;
    assert_eq!(
        run("tele/gh-climate/SENSOR", tasmota, "AM2301.Temperature", "1"),
        r#"{"device":"gh-climate","value":22.6}"#
    );
    let shelly = r#"{"id":0,"temperature:0":{"id":0,"tC":19.8,"tF":67.6},"switch:0":{"output":true}}"#;
    assert_eq!(run("shellyplus1/status", shelly, "temperature:0.tC", "0"), r#"{"device":"shellyplus1","value":19.8}"#);
    assert_eq!(run("shellyplus1/status", shelly, "switch:0.output", "0"), r#"{"device":"shellyplus1","value":1}"#);
    let z2m_old = r#"{"battery":"100.00","voltage":3005,"readings":[1,-2.5e1,3]}"#;
    assert_eq!(run("zigbee2mqtt/leak", z2m_old, "battery", "1"), r#"{"device":"leak","value":100}"#);
    assert_eq!(run("zigbee2mqtt/leak", z2m_old, "readings.1", "1"), r#"{"device":"leak","value":-25}"#);
    assert_eq!(run("gh-node/sensor/temperature/state", "23.5", "", "0"), r#"{"device":"gh-node","value":23.5}"#);
    assert_eq!(run("zigbee2mqtt/leak", z2m_old, "humidity", "1"), "none", "missing: skipped");
    assert_eq!(run("zigbee2mqtt/leak", r#"{"t":"warm"}"#, "t", "1"), "none", "not a number: skipped");
    // A Things Stack uplink of 64 KB: the value after all of its gateways' metadata.
    let heard: Vec<String> = (0..600).map(|g| format!(r#"{{"gateway_ids":{{"gateway_id":"gw-{g:04}"}},"rssi":-{g},"snr":9.5,"uplink_token":"ChIKEAoOZ3ctMDAwMRIIuCfr/mIYyJWZmQ0gAQ=="}}"#)).collect();
    let uplink = format!(
        r#"{{"uplink_message":{{"rx_metadata":[{}],"decoded_payload":{{"moisture":41,"temperature":21.3}}}}}}"#,
        heard.join(",")
    );
    assert!(uplink.len() > 64 * 1024, "{}", uplink.len());
    let topic = "v3/greenhouse@ttn/devices/soil-7/up";
    assert_eq!(
        run(topic, &uplink, "uplink_message.decoded_payload.temperature", "3"),
        r#"{"device":"soil-7","value":21.3}"#
    );
}

/// `invoke --profile`: the function gets the normalised reading a gateway
/// would give it, so the built-in threshold reads a Tasmota sensor by the
/// name `temperature`, and the reading is shown.
#[test]
fn invoke_with_a_profile_gives_the_function_the_normalised_reading() {
    let tasmota = r#"{"Time":"2026-12-07T10:00:00","AM2301":{"Temperature":29.1,"Humidity":40.1},"TempUnit":"C"}"#;
    let args = |profile: &str| {
        edgefn(&[
            "invoke",
            "--module",
            "builtin:threshold",
            "--topic",
            "tele/gh-climate/SENSOR",
            "--payload",
            tasmota,
            "--profile",
            profile,
            "--set",
            "field=temperature",
            "--set",
            "above=28",
            "--set",
            "below=25",
            "--set",
            "command_topic=cmnd/fan/POWER",
        ])
    };
    let out = args("tasmota:gh-climate");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(
            r#"reading  {"am2301_humidity":40.1,"am2301_temperature":29.1,"humidity":40.1,"temperature":29.1}"#
        ),
        "{said}"
    );
    assert!(said.contains("publish  cmnd/fan/POWER qos=1 retain=false ON"), "{said}");
    // ESPHome's profile reads its own node's topics only.
    let out = args("esphome:gh-node");
    let said = text(&out.stdout);
    assert!(said.contains("reading  (none: the profile cannot read this payload on this topic)"), "{said}");
    let out = args("tasmota-ish:x");
    assert!(
        !out.status.success() && text(&out.stderr).contains("is not a profile: zigbee2mqtt, tasmota"),
        "{}",
        text(&out.stderr)
    );
}

/// `--log-format json`: every line an object a log shipper reads, the
/// event's fields by name.
#[test]
fn json_log_lines_carry_time_level_target_message_and_the_events_fields() {
    let out = edgefn(&["demo", "--duration", "2s", "--speed", "6000", "--log", "info", "--log-format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{lines:?}");
    for line in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    let started = lines.iter().find(|l| l["message"] == "gateway started").expect("the start logged");
    assert_eq!((started["level"].as_str(), started["target"].as_str()), (Some("INFO"), Some("edgefn::gateway")));
    assert_eq!(
        (started["gateway"].as_str(), started["functions_loaded"].as_u64()),
        (Some("demo"), Some(3)),
        "{started}"
    );
    assert!(started["time"].as_str().unwrap().ends_with('Z'), "{started}");
}

/// The serverless hello world in C (functions/examples/c-http), answering as
/// the Rust one does.
#[test]
#[cfg_attr(edgefn_missing_clang, ignore = "needs clang: apt-get install clang lld (bash .ci/run runs it)")]
fn the_c_hello_example_answers_http_requests_by_name() {
    let Some(clang) = support::require_tool("clang", &["/usr/bin/clang"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("functions/examples/c-http/build.sh");
    let out = std::process::Command::new("bash").arg(&script).arg(dir.path()).env("CC", &clang).output().unwrap();
    assert!(out.status.success(), "building the C functions failed:\n{}", text(&out.stderr));
    assert_hello_answers(&dir.path().join("hello.wasm"), true);
}

/// The serverless hello world in AssemblyScript (functions/examples/hello-as),
/// answering as the Rust and C ones do.
#[cfg_attr(edgefn_missing_npm, ignore = "needs npm: apt-get install nodejs npm (bash .ci/run runs it)")]
#[test]
fn the_assemblyscript_hello_example_answers_http_requests_by_name() {
    // npm fetches the compiler from the registry on the first build.
    if support::require_tool("npm", &["/usr/bin/npm"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("hello.wasm");
    let script = repo_root().join("functions/examples/hello-as/build.sh");
    let out = std::process::Command::new("bash").arg(&script).arg(&module).output().unwrap();
    assert!(out.status.success(), "building the AssemblyScript hello failed:\n{}", text(&out.stderr));
    assert_hello_answers(&module, true);
}

/// `gateway.summary_every`: `edgefn run` logs its counters in one line that often.
#[test]
fn run_logs_its_one_line_summary_as_often_as_configured() {
    let broker = support::broker::TestBroker::from_env();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[gateway]\nid = \"gw-summary\"\nsummary_every = \"1s\"\ncontrol_socket = {:?}\n\n{}",
        dir.path().join("control.sock"),
        broker.gateway_toml()
    );
    let gateway = support::gateway::GatewayProcess::start(dir.path(), &config);
    let first = gateway.wait_for_log("a summary", |l| l.contains("events in 0 | invocations 0 ok, 0 failed"));
    let second = gateway.wait_for_log("another", |l| l.contains("events in 0 | invocations 0 ok, 0 failed"));
    assert!(first != second, "two lines, a second apart");
    gateway.stop();
}
