//! Turns the TOML parser's errors into ones a newcomer can act on: the dotted key
//! the error is at (`broker.port`, `functions[1].limits.fuel`) instead of the
//! offending value, and serde's `invalid type: string "18831", expected i64` as
//! `expected an integer, found the string "18831"`.

use std::ops::Range;

/// The dotted key path of the value at byte `offset` of `text`, read from the
/// table headers above it and the key on its line.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let upto = &text[..offset.min(text.len())];
    let line_start = upto.rfind('\n').map_or(0, |i| i + 1);
    let mut table = String::new();
    // Array-of-tables names seen so far, with the index of their latest element.
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for line in text[..line_start].lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split_once("]]")).map(|(n, _)| n.trim()) {
            let index = match arrays.iter_mut().find(|(n, _)| n == name) {
                Some((_, i)) => {
                    *i += 1;
                    *i
                }
                None => {
                    arrays.push((name.to_owned(), 0));
                    0
                }
            };
            table = format!("{}[{index}]", within_arrays(name, &arrays));
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split_once(']')).map(|(n, _)| n.trim()) {
            table = within_arrays(name, &arrays);
        }
    }
    let line = &text[line_start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    if let Some(header) = header_name(line) {
        // The error is at a table header itself: `[brokr]` is the key at fault.
        return Some(within_arrays(header, &arrays));
    }
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"')).filter(|k| !k.is_empty());
    match (table.is_empty(), key) {
        (true, Some(k)) => Some(k.to_owned()),
        (false, Some(k)) => Some(format!("{table}.{k}")),
        (false, None) => Some(table),
        (true, None) => None,
    }
}

/// The table a header line names: `broker` for `[broker]`, `functions` for `[[functions]]`.
fn header_name(line: &str) -> Option<&str> {
    let line = line.trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.split_once("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.split_once(']')));
    inner.map(|(name, _)| name.trim())
}

/// `functions.limits` under `[[functions]]` is `functions[N].limits`.
fn within_arrays(name: &str, arrays: &[(String, usize)]) -> String {
    let parent = arrays
        .iter()
        .filter(|(a, _)| name.starts_with(a.as_str()) && name[a.len()..].starts_with('.'))
        .max_by_key(|(a, _)| a.len());
    match parent {
        Some((a, i)) => format!("{a}[{i}]{}", &name[a.len()..]),
        None => name.to_owned(),
    }
}

/// serde's wording, rephrased: `invalid type: string "x", expected i64` becomes
/// `expected an integer, found the string "x"`. Other messages pass unchanged.
pub fn message(raw: &str) -> String {
    let raw = raw.trim_end();
    let Some(rest) = raw.strip_prefix("invalid type: ") else { return raw.to_owned() };
    let Some((found, expected)) = rest.split_once(", expected ") else { return raw.to_owned() };
    let expected = match expected {
        "i64" | "u64" | "i32" | "u32" | "u16" | "usize" | "an integer" => "an integer",
        "f64" | "f32" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" => "a string (in quotes)",
        "a sequence" => "a list ([...])",
        other => other,
    };
    let found = found.replace('`', "");
    let found = match found.split_once(' ') {
        Some((kind, value)) => format!("the {kind} {value}"),
        None => format!("a {found}"),
    };
    format!("expected {expected}, found {found}")
}

/// The key and message for a parser error at `span` of `text`.
pub fn describe(text: &str, span: Option<Range<usize>>, raw_message: &str) -> (String, String) {
    let key = span.clone().and_then(|s| key_at(text, s.start)).unwrap_or_else(|| "(syntax)".into());
    let at_header = span.is_some_and(|s| {
        let line_start = text[..s.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
        header_name(text[line_start..].lines().next().unwrap_or("")).is_some()
    });
    (key, unknown_key(raw_message, at_header).unwrap_or_else(|| message(raw_message)))
}

/// serde's `unknown field `brokr`, expected one of `gateway`, `broker`, ...`,
/// said as a person would: `unknown section [brokr]: did you mean [broker]?`
/// (or `unknown key`), with what is known there. `None` for other messages.
fn unknown_key(raw: &str, section: bool) -> Option<String> {
    let rest = raw.trim_end().strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let what = if section { "section" } else { "key" };
    let quote = |s: &str| if section { format!("[{s}]") } else { format!("`{s}`") };
    let closest = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d);
    let mut said = format!("unknown {what} {}", quote(name));
    if let Some((_, k)) = closest {
        said += &format!(": did you mean {}?", quote(k));
    }
    if !known.is_empty() {
        said += &format!(" (known here: {})", known.join(", "));
    }
    Some(said)
}

/// Levenshtein distance: the edits that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_key(text: &str, at: &str, expected: &str) {
        let offset = text.find(at).expect("marker in text");
        assert_eq!(key_at(text, offset).as_deref(), Some(expected));
    }

    #[test]
    fn keys_follow_tables_and_arrays_of_tables() {
        let text = "top = 1\n[gateway]\nid = \"g\"\n[broker]\nport = \"18831\"\n\
                    [[functions]]\nname = \"a\"\n[[functions]]\nname = \"b\"\n[functions.limits]\nfuel = \"x\"\n\
                    [[upstream.forward]]\nstream = 5\n";
        check_key(text, "1\n", "top");
        check_key(text, "\"18831\"", "broker.port");
        check_key(text, "\"a\"", "functions[0].name");
        check_key(text, "\"b\"", "functions[1].name");
        check_key(text, "\"x\"", "functions[1].limits.fuel");
        check_key(text, "5\n", "upstream.forward[0].stream");
    }

    #[test]
    fn serde_wording_becomes_plain_words() {
        assert_eq!(
            message("invalid type: string \"18831\", expected i64\n"),
            "expected an integer, found the string \"18831\""
        );
        assert_eq!(
            message("invalid type: integer `5`, expected a string"),
            "expected a string (in quotes), found the integer 5"
        );
        assert_eq!(message("unknown field `prot`"), "unknown field `prot`");
    }

    #[test]
    fn a_misspelled_section_is_named_as_a_section_with_the_closest_one() {
        let text = "[gateway]\nid = \"g\"\n\n[brokr]\nmode = \"embedded\"\n";
        let at = text.find("[brokr]").unwrap();
        let (key, said) = describe(
            text,
            Some(at..at + 7),
            "unknown field `brokr`, expected one of `gateway`, `broker`, `devices`, `functions`, `upstream`",
        );
        assert_eq!(key, "brokr");
        assert_eq!(
            said,
            "unknown section [brokr]: did you mean [broker]? (known here: gateway, broker, devices, functions, upstream)"
        );
    }

    #[test]
    fn a_misspelled_key_gets_the_closest_known_one_and_a_far_one_none() {
        let said = unknown_key("unknown field `workrs`, expected one of `id`, `workers`, `strict`", false);
        assert_eq!(
            said.as_deref(),
            Some("unknown key `workrs`: did you mean `workers`? (known here: id, workers, strict)")
        );
        let said = unknown_key("unknown field `colour`, expected one of `id`, `workers`", false).unwrap();
        assert!(!said.contains("did you mean"), "{said}");
    }
}
