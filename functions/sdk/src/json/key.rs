//! Comparing a raw JSON object key, escapes and all, with a plain name.

/// Whether the raw (still escaped) JSON key `raw` spells `name`.
pub(super) fn key_matches(raw: &str, name: &str) -> bool {
    if !raw.contains('\\') {
        return raw == name;
    }
    let mut expected = name.chars();
    let mut rest = raw;
    while !rest.is_empty() {
        let Some((ch, tail)) = unescape_one(rest) else {
            return false;
        };
        if expected.next() != Some(ch) {
            return false;
        }
        rest = tail;
    }
    expected.next().is_none()
}

/// Decodes the first character of a validated raw JSON string.
fn unescape_one(raw: &str) -> Option<(char, &str)> {
    let mut chars = raw.chars();
    let first = chars.next()?;
    if first != '\\' {
        return Some((first, chars.as_str()));
    }
    let kind = chars.next()?;
    let simple = match kind {
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => return unescape_unicode(chars.as_str()),
        other => other,
    };
    Some((simple, chars.as_str()))
}

/// Decodes the `XXXX` of `\uXXXX` (and a following low surrogate if needed).
fn unescape_unicode(rest: &str) -> Option<(char, &str)> {
    let unit = |s: &str| s.get(..4).and_then(|hex| u32::from_str_radix(hex, 16).ok());
    let high = unit(rest)?;
    let rest = &rest[4..];
    if !(0xD800..0xDC00).contains(&high) {
        return char::from_u32(high).map(|ch| (ch, rest));
    }
    let low = unit(rest.strip_prefix("\\u")?)?;
    if !(0xDC00..0xE000).contains(&low) {
        return None;
    }
    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
    char::from_u32(code).map(|ch| (ch, &rest[6..]))
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn plain_and_escaped_keys() {
        assert!(key_matches("temp", "temp"));
        assert!(key_matches(r"te\u006dp", "temp"));
        assert!(key_matches(r#"a\"b\\"#, r#"a"b\"#));
        assert!(key_matches(r"\ud83c\udf21", "🌡"));
        assert!(!key_matches(r"temp\n", "temp"));
        assert!(!key_matches(r"\u0074", "tt"));
        assert!(!key_matches(r"\ud83c", "🌡"));
    }
}
