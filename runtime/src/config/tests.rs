//! Configuration validation: what is accepted, and how refusals read.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
    parse_str(text, Path::new("gw.toml"), Path::new("/nonexistent"))
}

const MINIMAL: &str = "[gateway]\nid = \"g\"\n";

fn with_function(function: &str) -> String {
    format!("{MINIMAL}\n[[functions]]\nname = \"f\"\nmodule = \"builtin:threshold\"\n{function}")
}

#[track_caller]
fn check_error(text: &str, line: Option<usize>, key: &str, message_part: &str) {
    let err = parse(text).expect_err("config should be refused");
    assert_eq!((err.line, err.key.as_str()), (line, key), "{err}");
    assert!(err.message.contains(message_part), "{err}");
    assert!(err.to_string().starts_with("gw.toml"), "{err}");
}

#[test]
fn tls_files_are_found_beside_the_configuration_whatever_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), "").unwrap();
    let text =
        "[gateway]\nid = \"g\"\n[broker]\nmode = \"external\"\nhost = \"broker\"\n[broker.tls]\nca_file = \"ca.crt\"\n";
    // The working directory (the repository) has no ca.crt: the file's directory does.
    let cfg = parse_str(text, &dir.path().join("gw.toml"), dir.path()).unwrap();
    assert_eq!(cfg.broker.tls.map(|t| t.ca_file), Some(dir.path().join("ca.crt")));
}

#[test]
fn a_minimal_config_gets_sane_defaults() {
    let cfg = parse(MINIMAL).unwrap();
    assert_eq!(cfg.broker.mode, BrokerMode::External);
    assert_eq!((cfg.broker.host.as_str(), cfg.broker.port), ("localhost", 1883));
    assert_eq!(cfg.broker.client_id, "edgefn-g");
    assert_eq!(cfg.gateway.status_topic, "edgefn/g/status");
    assert_eq!(cfg.broker.max_packet_bytes, 256 << 10);
    assert!(cfg.gateway.workers >= 1);
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    check_error(
        "[gateway]\nid = \"g\"\nworkerz = 2\n",
        Some(3),
        "gateway.workerz",
        "unknown key `workerz`: did you mean `workers`?",
    );
    let text = with_function("triggers = [\"a\"]\n[functions.limits]\nfuell = 5\n");
    check_error(&text, Some(9), "functions[0].limits.fuell", "unknown key `fuell`: did you mean `fuel`?");
    check_error(
        "[gateway]\nid = \"g\"\n[brokr]\nmode = \"embedded\"\n",
        Some(3),
        "brokr",
        "unknown section [brokr]: did you mean [broker]?",
    );
}

#[test]
fn a_wrong_type_names_the_key_and_both_types() {
    let text = "[gateway]\nid = \"g\"\n\n[broker]\nhost = \"localhost\"\nport = \"18831\"\n";
    check_error(text, Some(6), "broker.port", "expected an integer, found the string \"18831\"");
}

#[test]
fn syntax_errors_carry_a_line() {
    let err = parse("[gateway\nid = 1").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
}

#[test]
fn bad_topic_filters_are_refused_naming_the_trigger() {
    let text = with_function("triggers = [\"ok/+\", \"sensors/#/temp\"]\n");
    check_error(&text, Some(7), "functions[0].triggers[1]", "uses '#' somewhere other than");
    check_error(&with_function("triggers = []\n"), Some(7), "functions[0].triggers", "is empty");
}

#[test]
fn a_function_name_never_names_a_parent_directory() {
    // Its spool, timers and deployed table are files named after it.
    for name in ["..", ".", ".hidden"] {
        let text = format!(
            "{MINIMAL}\n[[functions]]\nname = \"{name}\"\nmodule = \"builtin:threshold\"\ntriggers = [\"a\"]\n"
        );
        check_error(&text, Some(5), "functions[0].name", "not starting with '.'");
    }
    assert!(valid_function_name("fan.v2") && !valid_function_name(".."));
}

#[test]
fn timers_are_triggers_beside_topic_filters() {
    let text = with_function(
        "triggers = [\"a/+\", { every = \"10s\" },\n  { cron = \"0 6 * * *\", timezone = \"local\", missed = \"run_once\" }]\n",
    );
    let cfg = parse(&text).unwrap();
    let texts: Vec<String> = cfg.functions[0].triggers.iter().map(|t| t.text()).collect();
    assert_eq!(
        texts,
        ["a/+", "{ every = \"10s\" }", "{ cron = \"0 6 * * *\", timezone = \"local\", missed = \"run_once\" }"]
    );
    // A bad timer is named by its place and its field, on its own line.
    let text = with_function("triggers = [\"a/+\",\n  { every = \"ten seconds\" }]\n");
    check_error(&text, Some(8), "functions[0].triggers[1]", "every: \"ten seconds\" is not a duration");
    let text = with_function("triggers = [{ evry = \"10s\" }]\n");
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("evry"), "{err}");
}

#[test]
fn missing_modules_are_refused_with_what_to_do() {
    let text = format!("{MINIMAL}\n[[functions]]\nname = \"f\"\nmodule = \"nope.wasm\"\ntriggers = [\"a\"]\n");
    check_error(&text, Some(6), "functions[0].module", "does not exist: build it");
    let text = format!("{MINIMAL}\n[[functions]]\nname = \"f\"\nmodule = \"builtin:nope\"\ntriggers = [\"a\"]\n");
    check_error(&text, Some(6), "functions[0].module", "built in are threshold, window-average");
}

#[test]
fn impossible_limits_are_refused() {
    let text = with_function("triggers = [\"a\"]\n[functions.limits]\nmemory_bytes = 100\n");
    check_error(&text, Some(9), "functions[0].limits.memory_bytes", "out of range");
    let text = with_function("triggers = [\"a\"]\n[functions.limits]\nfuel = 0\n");
    check_error(&text, Some(9), "functions[0].limits.fuel", "out of range");
    let text = with_function("triggers = [\"a\"]\n[functions.limits]\ntimeout_ms = -5\n");
    check_error(&text, Some(9), "functions[0].limits.timeout_ms", "out of range");
}

#[test]
fn broker_settings_are_checked() {
    check_error(
        &format!("{MINIMAL}[broker]\nmode = \"cloud\"\n"),
        Some(4),
        "broker.mode",
        "use \"external\" or \"embedded\"",
    );
    check_error(
        &format!("{MINIMAL}[broker]\nmode = \"embedded\"\nlisten = \"localhost\"\n"),
        Some(5),
        "broker.listen",
        "not an address",
    );
    check_error(&format!("{MINIMAL}[broker]\nport = 70000\n"), Some(4), "broker.port", "out of range");
    check_error(&format!("{MINIMAL}[broker]\nlisten = \"127.0.0.1:1\"\n"), Some(4), "broker.listen", "only applies");
    let cfg = parse(&format!("{MINIMAL}[broker]\nmode = \"embedded\"\nlisten = \"0.0.0.0:1884\"\n")).unwrap();
    assert_eq!((cfg.broker.host.as_str(), cfg.broker.port), ("127.0.0.1", 1884));
}

#[test]
fn devices_need_unique_ids_and_valid_topics() {
    let dev = |id: &str, cmd: &str| format!("[[devices]]\nid = \"{id}\"\ncommand_topic = \"{cmd}\"\n");
    let text = format!("{MINIMAL}{}{}", dev("fan", "cmnd/fan/POWER"), dev("fan", "x"));
    check_error(&text, Some(7), "devices[1].id", "used by an earlier device");
    check_error(&format!("{MINIMAL}{}", dev("fan", "cmnd/+/POWER")), Some(5), "devices[0].command_topic", "wildcard");
}

#[test]
fn function_config_values_become_strings() {
    let text = with_function("triggers = [\"a\"]\n[functions.config]\nabove = 28.5\nn = 3\non = true\nname = \"x\"\n");
    let cfg = parse(&text).unwrap();
    let c = &cfg.functions[0].config;
    assert_eq!(
        (c["above"].as_str(), c["n"].as_str(), c["on"].as_str(), c["name"].as_str()),
        ("28.5", "3", "true", "x")
    );
    let text = with_function("triggers = [\"a\"]\n[functions.config]\nlist = [1, 2]\n");
    check_error(&text, Some(8), "functions[0].config.list", "must be a string, number or boolean");
}

#[test]
fn capabilities_default_to_any_topic_but_the_gateways_own_and_refuse_dollar_topics() {
    let cfg = parse(&with_function("triggers = [\"a\"]\n")).unwrap();
    let allow = &cfg.functions[0].allow;
    assert!(allow.may_publish("cmnd/fan/POWER"));
    assert!(!allow.may_publish(&cfg.gateway.status_topic));
    assert!(!allow.may_publish("$SYS/broker/uptime"));
    assert!(allow.may_upstream("anything"));

    let cfg = parse(&with_function(
        "triggers = [\"a\"]\n[functions.allow]\npublish = [\"cmnd/fan/#\"]\nupstream = [\"telemetry\"]\n",
    ))
    .unwrap();
    let allow = &cfg.functions[0].allow;
    assert!(allow.may_publish("cmnd/fan/POWER") && !allow.may_publish("cmnd/heater/POWER"));
    assert!(allow.may_upstream("telemetry") && !allow.may_upstream("other"));

    let text = with_function("triggers = [\"a\"]\n[functions.allow]\npublish = [\"$SYS/#\"]\n");
    check_error(&text, Some(9), "functions[0].allow.publish[0]", "$-topics");
}

#[test]
fn the_upstream_reconnect_backoff_defaults_to_200_ms_up_to_a_minute_and_can_be_set() {
    let upstream = |extra: &str| format!("{MINIMAL}[upstream]\nurl = \"mqtt://cloud:1883\"\n{extra}");
    let cfg = parse(&upstream("")).unwrap().upstream.unwrap();
    assert_eq!((cfg.broker.reconnect_min.as_millis(), cfg.broker.reconnect_max.as_millis()), (200, 60_000));
    let cfg = parse(&upstream("reconnect_min_ms = 50\nreconnect_max_ms = 500\n")).unwrap().upstream.unwrap();
    assert_eq!((cfg.broker.reconnect_min.as_millis(), cfg.broker.reconnect_max.as_millis()), (50, 500));
    check_error(
        &upstream("reconnect_min_ms = 500\nreconnect_max_ms = 50\n"),
        Some(6),
        "upstream.reconnect_max_ms",
        "out of range",
    );
}

#[test]
fn ids_that_no_broker_would_take_are_refused() {
    let long = "g".repeat(70_000);
    check_error(&format!("[gateway]\nid = \"{long}\"\n"), Some(2), "gateway.id", "must be 1 to 64 bytes");
    check_error(
        &format!("{MINIMAL}[broker]\nclient_id = \"gw\\u0000x\"\n"),
        Some(4),
        "broker.client_id",
        "no NUL or control characters",
    );
    check_error(
        &format!("{MINIMAL}[upstream]\nurl = \"mqtt://cloud:1883\"\nclient_id = \"\"\n"),
        Some(5),
        "upstream.client_id",
        "must be 1 to 128 bytes",
    );
}

#[test]
fn a_function_may_command_only_the_devices_it_lists() {
    let devices = "[[devices]]\nid = \"fan\"\ntelemetry = [\"stat/fan\"]\ncommand_topic = \"cmnd/fan/POWER\"\n\
                   [[devices]]\nid = \"heater\"\ntelemetry = [\"stat/heater\"]\ncommand_topic = \"cmnd/heater/POWER\"\n";
    let text = format!("{MINIMAL}{devices}\n[[functions]]\nname = \"f\"\nmodule = \"builtin:threshold\"\ntriggers = [\"a\"]\n[functions.allow]\ndevices = [\"fan\"]\n");
    let cfg = parse(&text).unwrap();
    let allow = &cfg.functions[0].allow;
    assert!(allow.may_publish("cmnd/fan/POWER"));
    assert!(!allow.may_publish("cmnd/heater/POWER"));
    // Topics that are no device's command topic are the publish list's to decide.
    assert!(allow.may_publish("some/other/topic"));
    let text = text.replace("devices = [\"fan\"]", "devices = [\"fan\", \"pump\"]");
    check_error(
        &text,
        Some(17),
        "functions[0].allow.devices[1]",
        "there is no [[devices]] \"pump\" (configured: fan, heater)",
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// A shipped configuration damaged anywhere (bytes deleted, replaced or
    /// inserted) is accepted or refused with an error that names the file;
    /// the loader never panics.
    #[test]
    fn a_damaged_configuration_is_refused_naming_the_file_never_a_panic(
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), 0usize..6, "[\\x00-\\x7f\\u{e9}\\u{1F600}]{0,4}"),
            1..4,
        ),
    ) {
        let mut text = include_str!("../../../device-configs/greenhouse.toml").to_owned();
        for (at, delete, insert) in edits {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + delete).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(at..end, &insert);
        }
        if let Err(err) = parse(&text) {
            proptest::prop_assert!(err.to_string().starts_with("gw.toml"), "{}", err);
            proptest::prop_assert!(!err.message.is_empty());
        }
    }
}

#[test]
fn check_refuses_what_could_not_run_on_this_machine() {
    // A broker host that is a URL or carries its port.
    let text = format!("{MINIMAL}[broker]\nhost = \"mqtt://broker.local\"\n");
    check_error(&text, Some(4), "broker.host", "is not a host name or address");
    let text = format!("{MINIMAL}[broker]\nhost = \"broker.local:1883\"\n");
    check_error(&text, Some(4), "broker.host", "the port goes in broker.port");
    assert!(parse(&format!("{MINIMAL}[broker]\nhost = \"fd00::7\"\n")).is_ok());
    let text = format!("{MINIMAL}[upstream]\nurl = \"mqtts://my broker:8883\"\n");
    assert!(parse(&text).unwrap_err().message.contains("is not a host name or address"));

    // A data directory that is a file, or would have to be made under one.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, b"not a directory").unwrap();
    let at = |data_dir: &Path| {
        let text =
            format!("{MINIMAL}[upstream]\nurl = \"mqtt://cloud\"\ndata_dir = {:?}\n", data_dir.display().to_string());
        parse_str(&text, &dir.path().join("gw.toml"), dir.path())
    };
    let err = at(&file).unwrap_err();
    assert_eq!((err.key.as_str(), err.line), ("upstream.data_dir", Some(5)), "{err}");
    assert!(err.message.contains("is not a directory"), "{err}");
    assert!(at(&file.join("deeper")).unwrap_err().message.contains("cannot be made"));
    assert!(at(&dir.path().join("new")).is_ok());

    // A reserve no filesystem here could leave free.
    let size = disk::filesystem_bytes(dir.path()).unwrap();
    let reserve = 1u64 << 40;
    let text = format!(
        "[gateway]\nid = \"g\"\nmodules_dir = {:?}\nmin_free_bytes = {reserve}\n",
        dir.path().display().to_string()
    );
    if size <= reserve {
        let err = parse(&text).unwrap_err();
        assert_eq!((err.key.as_str(), err.line), ("gateway.min_free_bytes", Some(4)), "{err}");
        assert!(err.message.contains("more than the whole filesystem"), "{err}");
    } else {
        eprintln!("this filesystem ({size} bytes) is larger than the largest reserve the file takes: not refused");
    }
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_the_byte_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, b"[gateway]\nid = \"caf\xe9\"\n").unwrap();
    let err = load_file(&path).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("is not UTF-8 at byte 19 (0xe9)"), "{err}");
}

#[test]
fn a_broker_on_this_machine_is_tried_again_within_a_second_one_elsewhere_within_30() {
    for host in ["localhost", "127.0.0.1", "::1"] {
        let cfg = parse(&format!("{MINIMAL}[broker]\nhost = \"{host}\"\n")).unwrap();
        assert_eq!(cfg.broker.reconnect_max, std::time::Duration::from_secs(1), "{host}");
    }
    let cfg = parse(&format!("{MINIMAL}[broker]\nmode = \"embedded\"\n")).unwrap();
    assert_eq!(cfg.broker.reconnect_max, std::time::Duration::from_secs(1));
    let cfg = parse(&format!("{MINIMAL}[broker]\nhost = \"broker.lan\"\n")).unwrap();
    assert_eq!(cfg.broker.reconnect_max, std::time::Duration::from_secs(30));
    let cfg = parse(&format!("{MINIMAL}[broker]\nhost = \"localhost\"\nreconnect_max_ms = 5000\n")).unwrap();
    assert_eq!(cfg.broker.reconnect_max, std::time::Duration::from_secs(5));
}

#[test]
fn the_api_is_off_unless_configured_on_loopback_by_default_and_its_tokens_are_checked() {
    assert!(parse(MINIMAL).unwrap().api.is_none());
    let hash = "a".repeat(64);
    let token = |name: &str, sha: &str, scopes: &str| {
        format!("[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{sha}\"\nscopes = {scopes}\n")
    };
    let api =
        parse(&format!("{MINIMAL}[api]\n{}", token("grafana", &hash, "[\"read\", \"read\"]"))).unwrap().api.unwrap();
    assert_eq!(api.listen.to_string(), "127.0.0.1:9750");
    assert_eq!((api.tokens[0].name.as_str(), api.tokens[0].scopes.as_slice()), ("grafana", &[Scope::Read][..]));
    assert_eq!(api.tokens[0].sha256, [0xaa; 32]);
    let listen = parse(&format!("{MINIMAL}[api]\nlisten = \"[::]:80\"\n")).unwrap().api.unwrap().listen;
    assert_eq!(listen.to_string(), "[::]:80");

    check_error(&format!("{MINIMAL}[api]\nlisten = \"localhost\"\n"), Some(4), "api.listen", "address and port");
    check_error(
        &format!("{MINIMAL}[api]\n{}", token("a", "xyz", "[\"read\"]")),
        Some(6),
        "api.tokens[0].sha256",
        "edgefn token",
    );
    check_error(
        &format!("{MINIMAL}[api]\n{}", token("a", &hash, "[\"admin\"]")),
        Some(7),
        "api.tokens[0].scopes[0]",
        "\"read\", \"invoke\" or \"deploy\"",
    );
    check_error(
        &format!("{MINIMAL}[api]\n{}", token("a", &hash, "[]")),
        Some(7),
        "api.tokens[0].scopes",
        "opens nothing",
    );
    let two =
        format!("{MINIMAL}[api]\n{}{}", token("a", &hash, "[\"read\"]"), token("a", &"b".repeat(64), "[\"read\"]"));
    check_error(&two, Some(9), "api.tokens[1].name", "differ");
    let same = format!("{MINIMAL}[api]\n{}{}", token("a", &hash, "[\"read\"]"), token("b", &hash, "[\"read\"]"));
    check_error(&same, Some(10), "api.tokens[1].sha256", "same token");
}

#[test]
fn http_routes_need_the_api_and_may_not_overlap() {
    let api = "[api]\n";
    let route = |name: &str, r: &str| {
        format!("[[functions]]\nname = \"{name}\"\nmodule = \"builtin:threshold\"\ntriggers = [{{ http = \"{r}\" }}]\n")
    };
    let cfg = parse(&format!("{MINIMAL}{api}{}", route("a", "GET /rooms/{room}"))).unwrap();
    let trigger = &cfg.functions[0].triggers[0];
    assert_eq!(trigger.text(), "{ http = \"GET /rooms/{room}\" }");
    assert_eq!(trigger.http().unwrap().matches("GET", "/rooms/hall"), Some(vec![("room".into(), "hall".into())]));
    assert_eq!(crate::trigger::RawTrigger::from_arg(&trigger.text()).unwrap(), trigger.raw());

    check_error(
        &format!("{MINIMAL}{}", route("a", "GET /x")),
        Some(6),
        "functions[0].triggers[0]",
        "add an [api] section",
    );
    let two = format!("{MINIMAL}{api}{}{}", route("a", "GET /rooms/{room}"), route("b", "GET /rooms/hall"));
    check_error(&two, Some(11), "functions[1].triggers[0]", "overlaps a route of function a");
    check_error(
        &format!("{MINIMAL}{api}{}", route("a", "GET /metrics")),
        Some(7),
        "functions[0].triggers[0]",
        "own routes",
    );
}

#[test]
fn a_tokens_rate_is_optional_and_its_burst_needs_it() {
    let token = |extra: &str| {
        format!(
            "{MINIMAL}[api]\n[[api.tokens]]\nname = \"a\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n{extra}",
            "c".repeat(64)
        )
    };
    assert_eq!(parse(&token("")).unwrap().api.unwrap().tokens[0].rate, None);
    assert_eq!(parse(&token("rate_per_s = 5\n")).unwrap().api.unwrap().tokens[0].rate, Some((5, 5)));
    assert_eq!(parse(&token("rate_per_s = 5\nburst = 20\n")).unwrap().api.unwrap().tokens[0].rate, Some((5, 20)));
    check_error(&token("burst = 20\n"), Some(8), "api.tokens[0].burst", "needs rate_per_s");
    check_error(&token("rate_per_s = 0\n"), Some(8), "api.tokens[0].rate_per_s", "");
}

#[test]
fn a_tokens_routes_are_routes_and_limit_an_invoke_scope_it_has() {
    let token = |scopes: &str, routes: &str| {
        format!(
            "{MINIMAL}[api]\nopen_metrics = true\n[[api.tokens]]\nname = \"a\"\nsha256 = \"{}\"\nscopes = {scopes}\nroutes = {routes}\n",
            "c".repeat(64)
        )
    };
    let api = parse(&token(r#"["invoke"]"#, r#"["GET  /rooms/{room}"]"#)).unwrap().api.unwrap();
    assert_eq!(api.tokens[0].routes, Some(vec!["GET /rooms/{room}".to_owned()]));
    assert!(api.open_metrics);
    check_error(&token(r#"["read"]"#, r#"["GET /x"]"#), Some(9), "api.tokens[0].routes", "lacks");
    check_error(&token(r#"["invoke"]"#, r#"["FETCH /x"]"#), Some(9), "api.tokens[0].routes[0]", "not a method");
}

#[test]
fn device_availability_is_a_topic_name_with_both_payloads_or_neither_and_triggers_name_a_device_that_can_go_offline() {
    let plug = "[[devices]]\nid = \"plug\"\ntelemetry = [\"tele/plug/SENSOR\"]\navailability = \"tele/plug/LWT\"\n";
    let watch = |device: &str| {
        format!("[[functions]]\nname = \"w\"\nmodule = \"builtin:threshold\"\ntriggers = [{{ availability = \"{device}\" }}]\n")
    };
    let cfg = parse(&format!("{MINIMAL}{plug}offline_after = \"5m\"\n{}", watch("plug"))).unwrap();
    let device = &cfg.devices[0];
    assert_eq!(device.availability.as_ref().unwrap().topic.as_str(), "tele/plug/LWT");
    assert_eq!(device.availability.as_ref().unwrap().payloads, Announcements::Usual);
    assert_eq!(device.offline_after, Some(std::time::Duration::from_secs(300)));
    assert_eq!(cfg.functions[0].triggers[0].availability(), Some("plug"));
    assert!(parse(&format!("{MINIMAL}{plug}{}", watch("*"))).is_ok());

    let own = parse(&format!("{MINIMAL}{plug}online_payload = \"Online\"\noffline_payload = \"Offline\"\n")).unwrap();
    assert_eq!(
        own.devices[0].availability.as_ref().unwrap().payloads,
        Announcements::Exactly { online: "Online".into(), offline: "Offline".into() }
    );
    check_error(
        &format!("{MINIMAL}{plug}online_payload = \"up\"\n"),
        Some(7),
        "devices[0].online_payload",
        "or neither",
    );
    check_error(
        &format!("{MINIMAL}{plug}online_payload = \"x\"\noffline_payload = \"x\"\n"),
        Some(8),
        "devices[0].offline_payload",
        "must differ",
    );
    check_error(
        &format!("{MINIMAL}[[devices]]\nid = \"s\"\nonline_payload = \"up\"\n"),
        Some(5),
        "devices[0].online_payload",
        "set `availability` too",
    );
    check_error(
        &format!("{MINIMAL}[[devices]]\nid = \"s\"\navailability = \"s/+/LWT\"\n"),
        Some(5),
        "devices[0].availability",
        "wildcard",
    );
    check_error(
        &format!("{MINIMAL}{plug}offline_after = \"500ms\"\n"),
        Some(7),
        "devices[0].offline_after",
        "shortest, 1s",
    );
    check_error(
        &format!("{MINIMAL}{plug}offline_after = \"soon\"\n"),
        Some(7),
        "devices[0].offline_after",
        "not a duration",
    );
    check_error(&format!("{MINIMAL}{plug}{}", watch("fan")), Some(10), "functions[0].triggers[0]", "no device \"fan\"");
    let silent = "[[devices]]\nid = \"s\"\ntelemetry = [\"s/t\"]\n";
    check_error(
        &format!("{MINIMAL}{silent}{}", watch("s")),
        Some(9),
        "functions[0].triggers[0]",
        "can never go offline",
    );
    check_error(&format!("{MINIMAL}{silent}{}", watch("*")), Some(9), "functions[0].triggers[0]", "no device has");
}

#[test]
fn home_assistant_discovery_is_off_unless_configured_and_its_announcements_are_checked() {
    assert!(parse(MINIMAL).unwrap().homeassistant.is_none());
    let cfg = parse(&format!("{MINIMAL}\n[homeassistant]\n")).unwrap();
    let h = cfg.homeassistant.unwrap();
    assert_eq!((h.prefix.as_str(), h.discovery, h.announce.len()), ("homeassistant", true, 0));
    check_error(
        &format!("{MINIMAL}\n[homeassistant]\nprefix = \"ha/#\"\n"),
        Some(5),
        "homeassistant.prefix",
        "topic name",
    );
    let announce = |body: &str| format!("{MINIMAL}\n[homeassistant]\n[[homeassistant.announce]]\n{body}");
    let ok = parse(&announce("name = \"Average\"\ntopic = \"gh/summary\"\nfield = \"climate.avg\"\n")).unwrap();
    let a = &ok.homeassistant.unwrap().announce[0];
    assert_eq!(
        (a.component.as_str(), a.field.as_deref()),
        ("sensor", Some(&["climate".to_owned(), "avg".to_owned()][..]))
    );
    check_error(&announce("name = \"A\"\ntopic = \"gh/+\"\n"), Some(7), "homeassistant.announce[0].topic", "wildcard");
    check_error(
        &announce("name = \"A\"\ntopic = \"gh/s\"\ncomponent = \"switch\"\n"),
        Some(8),
        "homeassistant.announce[0].component",
        "\"sensor\" or \"binary_sensor\"",
    );
    check_error(
        &announce("name = \"A\"\ntopic = \"gh/s\"\nfield = \"a..b\"\n"),
        Some(8),
        "homeassistant.announce[0].field",
        "dotted path",
    );
    // Watching every device's availability with none configured: only with discovery.
    let watch_all = "triggers = [{ availability = \"*\" }]\n";
    check_error(&with_function(watch_all), Some(7), "functions[0].triggers[0]", "no device \"*\"");
    let discovering = format!("{}\n[homeassistant]\n", with_function(watch_all));
    assert!(parse(&discovering).is_ok());
}

#[test]
fn the_run_summary_is_logged_every_minute_unless_configured_otherwise() {
    use std::time::Duration;
    assert_eq!(parse(MINIMAL).unwrap().gateway.summary_every, Some(Duration::from_secs(60)));
    let with = |every: &str| format!("[gateway]\nid = \"g\"\nsummary_every = \"{every}\"\n");
    assert_eq!(parse(&with("10s")).unwrap().gateway.summary_every, Some(Duration::from_secs(10)));
    assert_eq!(parse(&with("off")).unwrap().gateway.summary_every, None);
    check_error(&with("500ms"), Some(3), "gateway.summary_every", "1s or longer");
    check_error(&with("often"), Some(3), "gateway.summary_every", "or \"off\"");
}
