//! Comparing a raw JSON object key, escapes and all, with a plain name.

use crate::text::same_bytes;

/// Whether the raw (still escaped) JSON key `raw` spells `name`; `escaped` says
/// whether `raw` holds a backslash at all, as the parser saw while reading it.
pub(super) fn key_matches(raw: &[u8], escaped: bool, name: &str) -> bool {
    if !escaped {
        return same_bytes(raw, name.as_bytes());
    }
    // Escaped keys are rare: decode them character by character. The parser
    // checked that the key is UTF-8, so `from_utf8` only restates it.
    core::str::from_utf8(raw).is_ok_and(|raw| escaped_key_matches(raw, name))
}

/// [`key_matches`] for a key that holds escapes.
fn escaped_key_matches(raw: &str, name: &str) -> bool {
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

    /// `key_matches` on a raw key, flagged escaped as the parser would.
    fn matches(raw: &str, name: &str) -> bool {
        key_matches(raw.as_bytes(), raw.contains('\\'), name)
    }

    #[test]
    fn plain_and_escaped_keys() {
        assert!(matches("temp", "temp"));
        assert!(!matches("temp", "tempe"));
        assert!(!matches("temq", "temp"));
        assert!(matches(r"te\u006dp", "temp"));
        assert!(matches(r#"a\"b\\"#, r#"a"b\"#));
        assert!(matches(r"\ud83c\udf21", "🌡"));
        assert!(!matches(r"temp\n", "temp"));
        assert!(!matches(r"\u0074", "tt"));
        assert!(!matches(r"\ud83c", "🌡"));
    }
}
