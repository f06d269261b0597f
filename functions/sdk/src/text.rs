//! Text without an allocator: formatting into fixed-size strings and filling in
//! `{placeholder}` templates such as topics.

use core::fmt::{self, Write};

use heapless::String;

use crate::{Error, ErrorKind};

/// Formats `args` into a string of at most `N` bytes, never failing: text that
/// does not fit is cut at a character boundary and ends in `...`.
///
/// The [`format!`](crate::format) macro is the usual way to call this.
pub fn format<const N: usize>(args: fmt::Arguments<'_>) -> String<N> {
    let mut out = Truncating { text: String::new(), cut: false };
    // `Truncating::write_str` never fails; an error could only come from a
    // `Display` impl, and then the partial text is still the best we have.
    let _ = out.write_fmt(args);
    if out.cut {
        const MARK: &str = "...";
        while out.text.len() + MARK.len() > N && out.text.pop().is_some() {}
        let _ = out.text.push_str(MARK);
    }
    out.text
}

/// Replaces every `name` of `vars` (written with its braces, like `"{device}"`) in
/// `template` by its value; an [`ErrorKind::Capacity`] error if the result exceeds `N`.
///
/// ```
/// let topic = edgefn_sdk::text::substitute::<64>("fans/{device}/set", &[("{device}", "gh-1")]);
/// assert_eq!(topic.unwrap().as_str(), "fans/gh-1/set");
/// ```
#[inline(never)]
pub fn substitute<const N: usize>(template: &str, vars: &[(&str, &str)]) -> Result<String<N>, Error> {
    let mut out = String::new();
    let full = || expands_past(template, N);
    let starts = first_bytes(vars);
    let mut rest = template;
    // Copies the text between placeholders in whole runs, not char by char: the
    // interpreter charges for every instruction, so the scan is kept small.
    while let Some((at, name, value)) = next_placeholder(rest, vars, &starts) {
        // `at` starts a match of `name`, so both splits are at character
        // boundaries; `get` only avoids linking slice-panic code.
        let (before, matched) = rest.split_at_checked(at).unwrap_or((rest, ""));
        out.push_str(before).map_err(|_| full())?;
        out.push_str(value).map_err(|_| full())?;
        rest = matched.get(name.len()..).unwrap_or("");
    }
    out.push_str(rest).map_err(|_| full())?;
    Ok(out)
}

/// Whether `a` and `b` hold the same bytes.
///
/// The same answer as `a == b`, which calls `memcmp`: for the short text of
/// functions (ids, keys, topics) a plain loop costs the interpreter far less.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut at = 0;
    while let (Some(x), Some(y)) = (a.get(at), b.get(at)) {
        if x != y {
            return false;
        }
        at += 1;
    }
    true
}

/// The error for a `template` that expands past `cap` bytes; out of line, as
/// the interpreter charges a function's whole body on every call.
#[cold]
#[inline(never)]
fn expands_past(template: &str, cap: usize) -> Error {
    Error::format(ErrorKind::Capacity, format_args!("`{template}` expands past {cap} bytes"))
}

/// The bytes the names of `vars` start with, flagged in a table.
fn first_bytes(vars: &[(&str, &str)]) -> [bool; 256] {
    let mut starts = [false; 256];
    for (name, _) in vars {
        if let Some(&first) = name.as_bytes().first() {
            starts[usize::from(first)] = true;
        }
    }
    starts
}

/// The leftmost placeholder of `vars` in `text`: its byte offset, name and value.
/// Where several names match at the same offset, the first in `vars` wins.
/// `starts` flags the bytes a name can start with (see [`first_bytes`]).
fn next_placeholder<'v>(
    text: &str,
    vars: &[(&'v str, &'v str)],
    starts: &[bool; 256],
) -> Option<(usize, &'v str, &'v str)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    loop {
        at = next_start(bytes, at, starts)?;
        let found = vars.iter().find(|(name, _)| {
            let candidate = bytes.get(at..at + name.len());
            !name.is_empty() && candidate.is_some_and(|text| same_bytes(text, name.as_bytes()))
        });
        if let Some(&(name, value)) = found {
            return Some((at, name, value));
        }
        at += 1;
    }
}

/// The index of the first byte at or after `at` that `starts` flags. A loop in
/// a function of its own: the interpreter charges every pass for the whole loop
/// body, so it holds nothing but the test.
#[inline(never)]
fn next_start(bytes: &[u8], mut at: usize, starts: &[bool; 256]) -> Option<usize> {
    while !starts[usize::from(*bytes.get(at)?)] {
        at += 1;
    }
    Some(at)
}

/// Formats into a `heapless::String<N>`, cutting what does not fit:
/// `let line: heapless::String<64> = edgefn_sdk::format!("t={}", t);`.
#[macro_export]
macro_rules! format {
    ($($arg:tt)+) => { $crate::text::format(::core::format_args!($($arg)+)) };
}

/// A `fmt::Write` sink that keeps what fits and remembers that it cut something.
struct Truncating<const N: usize> {
    /// The text written so far.
    text: String<N>,
    /// Whether some text was dropped because `text` was full.
    cut: bool,
}

impl<const N: usize> Write for Truncating<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        if self.text.push_str(s).is_err() {
            // Keep the longest prefix that fits and ends on a character boundary.
            let mut end = N - self.text.len();
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let _ = self.text.push_str(s.get(..end).unwrap_or(""));
            self.cut = true;
        }
        Ok(())
    }
}

/// Level `index` of an MQTT topic, from 0 (`tele/plug-1/SENSOR`: 1 is
/// `plug-1`); `None` past the last.
///
/// ```
/// use edgefn_sdk::text::level;
/// assert_eq!(level("v3/app@ttn/devices/soil-7/up", 3), Some("soil-7"));
/// assert_eq!(level("tele/plug-1/SENSOR", 3), None);
/// assert_eq!(level("a//b", 1), Some(""));
/// ```
pub fn level(topic: &str, index: usize) -> Option<&str> {
    topic.split('/').nth(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_format<const N: usize>(args: fmt::Arguments<'_>, expected: &str) {
        assert_eq!(format::<N>(args).as_str(), expected);
    }

    #[test]
    fn formats_when_it_fits() {
        check_format::<16>(format_args!("t={} n={}", 21.5, 3), "t=21.5 n=3");
        check_format::<10>(format_args!("0123456789"), "0123456789");
    }

    #[test]
    fn cuts_long_text_with_a_mark() {
        check_format::<10>(format_args!("0123456789ab"), "0123456...");
        // A multi-byte character is never split.
        check_format::<8>(format_args!("abcdéééééé"), "abcd...");
        check_format::<2>(format_args!("abc"), "");
    }

    #[test]
    fn substitutes_every_placeholder() {
        let vars = [("{device}", "gh-1"), ("{field}", "temp")];
        let topic: String<64> = substitute("d/{device}/{field}_avg/{device}", &vars).unwrap();
        assert_eq!(topic.as_str(), "d/gh-1/temp_avg/gh-1");
        let plain: String<64> = substitute("a/{other}/é", &vars).unwrap();
        assert_eq!(plain.as_str(), "a/{other}/é");
        let edges: String<64> = substitute("{device}é{field}", &vars).unwrap();
        assert_eq!(edges.as_str(), "gh-1étemp");
    }

    #[test]
    fn substitute_prefers_the_leftmost_then_the_first_name() {
        let vars = [("{a}", "1"), ("{a}{b}", "2"), ("b}", "3"), ("", "never")];
        let out: String<64> = substitute("x{a}{b}y{b}", &vars).unwrap();
        assert_eq!(out.as_str(), "x1{3y{3");
        let none: String<8> = substitute("", &vars).unwrap();
        assert_eq!(none.as_str(), "");
    }

    #[test]
    fn compares_bytes() {
        assert!(same_bytes(b"", b""));
        assert!(same_bytes(b"gh-1", b"gh-1"));
        assert!(!same_bytes(b"gh-1", b"gh-2"));
        assert!(!same_bytes(b"gh-1", b"gh-10"));
        assert!(!same_bytes(b"gh-10", b"gh-1"));
    }

    #[test]
    fn substitute_reports_overflow() {
        let err = substitute::<8>("{device}/x", &[("{device}", "long-device")]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Capacity);
    }
}
