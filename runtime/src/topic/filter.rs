//! Topic filters as MQTT 3.1.1 §4.7 defines them.
//!
//! A filter is a `/`-separated list of levels; `+` stands for exactly one level and
//! `#`, which must be the last level, for the parent level and any number of
//! levels below it. Filters starting with a wildcard do not match topics starting
//! with `$` (`$SYS/...`): those are only matched by filters that spell the `$` out.

use std::fmt;

/// The longest topic or filter MQTT can carry (a two-byte length prefix).
const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a topic filter or topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 65535 bytes")]
    TooLong,
    #[error("contains a NUL character")]
    Nul,
    #[error("uses '#' somewhere other than as the whole last level (write `a/#`, not `a#` or `a/#/b`)")]
    MisplacedMultiLevel,
    #[error("uses '+' as part of a level (write `a/+/b`, not `a/b+`)")]
    MisplacedSingleLevel,
    #[error("contains a wildcard ('+' or '#'), which only subscriptions may use")]
    WildcardInName,
}

/// One level of a parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    Exact(String),
    /// `+`: exactly one level, of any content (even empty).
    Single,
    /// `#`: this level and everything below it, or nothing at all.
    Multi,
}

/// A validated MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    /// The filter as written, for logs and for subscribing.
    text: String,
    /// The parsed levels the router walks.
    levels: Vec<Level>,
}

impl TopicFilter {
    /// Parses and validates a filter.
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        check_common(text)?;
        let mut levels = Vec::new();
        let parts: Vec<&str> = text.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::Multi,
                "+" => Level::Single,
                p if p.contains('#') => return Err(TopicError::MisplacedMultiLevel),
                p if p.contains('+') => return Err(TopicError::MisplacedSingleLevel),
                p => Level::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter { text: text.to_owned(), levels })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// True if the filter's first level is a wildcard, which keeps it off `$` topics.
    pub(crate) fn starts_with_wildcard(&self) -> bool {
        matches!(self.levels.first(), Some(Level::Single | Level::Multi))
    }

    /// Whether `topic` (a topic name, not a filter) matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Multi => return true,
                Level::Single => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => match topic_levels.next() {
                    Some(got) if got == want => {}
                    _ => return false,
                },
            }
        }
        topic_levels.next().is_none()
    }
}

impl TopicFilter {
    /// Whether every topic `other` matches is also matched by `self`, so that
    /// subscribing to both would only make the broker deliver messages twice.
    pub fn covers(&self, other: &TopicFilter) -> bool {
        let dollar = matches!(other.levels.first(), Some(Level::Exact(l)) if l.starts_with('$'));
        if dollar && self.starts_with_wildcard() {
            return false;
        }
        let mut theirs = other.levels.iter();
        for mine in &self.levels {
            match (mine, theirs.next()) {
                (Level::Multi, _) => return true,
                (_, None) => return false,
                (Level::Single, Some(Level::Exact(_) | Level::Single)) => {}
                (Level::Exact(a), Some(Level::Exact(b))) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

/// The filters worth subscribing to: duplicates and filters covered by another
/// one removed, so that no message is delivered twice.
pub fn minimal_subscriptions<'a>(filters: impl IntoIterator<Item = &'a TopicFilter>) -> Vec<&'a TopicFilter> {
    let mut all: Vec<&TopicFilter> = filters.into_iter().collect();
    all.sort_by(|a, b| a.text.cmp(&b.text));
    all.dedup_by(|a, b| a.text == b.text);
    all.iter().copied().filter(|f| !all.iter().any(|g| g.text != f.text && g.covers(f))).collect()
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks a topic name that will be published to: non-empty and wildcard-free.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    if text.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

#[cfg(test)]
mod properties {
    use super::*;

    /// MQTT's matching rule, written the plain way: level by level, `+` one
    /// level, `#` the rest (its parent too), and no wildcard first for a `$` topic.
    fn reference(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && filter.starts_with(['+', '#']) {
            return false;
        }
        fn walk(f: &[&str], t: &[&str]) -> bool {
            match (f.split_first(), t.split_first()) {
                (Some((&"#", _)), _) => true,
                (Some((&"+", fr)), Some((_, tr))) => walk(fr, tr),
                (Some((fl, fr)), Some((tl, tr))) => fl == tl && walk(fr, tr),
                (None, None) => true,
                _ => false,
            }
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        walk(&f, &t)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Any text parses or is refused without a panic, and a parsed filter
        /// matches exactly the topics the plain rule says it does.
        #[test]
        fn a_filter_matches_what_the_mqtt_rule_says(filter in "[ab$+#/]{0,9}", topic in "[ab$/]{1,7}") {
            if let Ok(parsed) = TopicFilter::parse(&filter) {
                proptest::prop_assert_eq!(parsed.as_str(), filter.as_str());
                proptest::prop_assert_eq!(parsed.matches(&topic), reference(&filter, &topic), "{} on {}", filter, topic);
            }
        }

        /// Arbitrary text (control characters, NUL, any Unicode) never panics the parser.
        #[test]
        fn any_text_is_parsed_or_refused(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            let _ = TopicFilter::parse(&text);
            let _ = validate_topic_name(&text);
        }

        /// `covers` never claims more than it matches: a covered filter's
        /// topics are matched by the covering one.
        #[test]
        fn a_covering_filter_matches_everything_it_covers(a in "[ab+#/]{1,6}", b in "[ab+#/]{1,6}", topic in "[ab/]{1,7}") {
            if let (Ok(a), Ok(b)) = (TopicFilter::parse(&a), TopicFilter::parse(&b)) {
                if a.covers(&b) && b.matches(&topic) {
                    proptest::prop_assert!(a.matches(&topic), "{} covers {} but not {}", a.as_str(), b.as_str(), topic);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(filter: &str, topic: &str, expected: bool) {
        let f = TopicFilter::parse(filter).unwrap();
        assert_eq!(f.matches(topic), expected, "filter {filter:?} vs topic {topic:?}");
    }

    #[test]
    fn exact_levels() {
        check("a/b", "a/b", true);
        check("a/b", "a/b/c", false);
        check("a/b", "a", false);
        check("a/b", "A/b", false);
    }

    #[test]
    fn multi_level_matches_parent_and_children() {
        // The spec's own example: "sport/tennis/player1/#".
        let f = "sport/tennis/player1/#";
        check(f, "sport/tennis/player1", true);
        check(f, "sport/tennis/player1/ranking", true);
        check(f, "sport/tennis/player1/score/wimbledon", true);
        check(f, "sport/tennis/player2", false);
        check("sport/#", "sport", true);
        check("#", "anything/at/all", true);
    }

    #[test]
    fn single_level_is_exactly_one_level() {
        check("sport/tennis/+", "sport/tennis/player1", true);
        check("sport/tennis/+", "sport/tennis/player1/ranking", false);
        check("sport/+", "sport", false);
        check("sport/+", "sport/", true);
        check("+/+", "/finance", true);
        check("/+", "/finance", true);
        check("+", "/finance", false);
        check("+/tennis/#", "sport/tennis", true);
    }

    #[test]
    fn empty_levels_are_levels() {
        check("a//b", "a//b", true);
        check("a/+/b", "a//b", true);
        check("a/b", "a//b", false);
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        check("#", "$SYS/broker/uptime", false);
        check("+/monitor/Clients", "$SYS/monitor/Clients", false);
        check("$SYS/#", "$SYS/monitor/Clients", true);
        check("$SYS/monitor/+", "$SYS/monitor/Clients", true);
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        assert_eq!(TopicFilter::parse(""), Err(TopicError::Empty));
        assert_eq!(TopicFilter::parse("sport/tennis#"), Err(TopicError::MisplacedMultiLevel));
        assert_eq!(TopicFilter::parse("sport/tennis/#/ranking"), Err(TopicError::MisplacedMultiLevel));
        assert_eq!(TopicFilter::parse("sport+"), Err(TopicError::MisplacedSingleLevel));
        assert_eq!(TopicFilter::parse("a/\0"), Err(TopicError::Nul));
        assert_eq!(TopicFilter::parse(&"a".repeat(65_536)), Err(TopicError::TooLong));
        assert!(TopicFilter::parse("+").is_ok());
        assert!(TopicFilter::parse("/").is_ok());
    }

    #[test]
    fn covering_filters() {
        let covers = |a: &str, b: &str| TopicFilter::parse(a).unwrap().covers(&TopicFilter::parse(b).unwrap());
        assert!(covers("#", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn minimal_subscriptions_drop_covered_and_duplicate_filters() {
        let fs: Vec<TopicFilter> =
            ["zigbee2mqtt/+", "zigbee2mqtt/climate", "tele/#", "tele/fan/SENSOR", "zigbee2mqtt/+", "$SYS/x", "cmnd/a"]
                .iter()
                .map(|f| TopicFilter::parse(f).unwrap())
                .collect();
        let min: Vec<&str> = minimal_subscriptions(&fs).iter().map(|f| f.as_str()).collect();
        assert_eq!(min, ["$SYS/x", "cmnd/a", "tele/#", "zigbee2mqtt/+"]);
    }

    #[test]
    fn topic_names_refuse_wildcards() {
        assert_eq!(validate_topic_name("cmnd/fan/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("cmnd/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("cmnd/fan/POWER"), Ok(()));
    }
}
