//! A topic trie: given a topic, finds every subscription whose filter matches it.
//!
//! The cost of a lookup grows with the depth of the topic and the number of
//! subscriptions that actually match, not with the number of subscriptions, so a
//! gateway with hundreds of triggers routes as fast as one with three.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::filter::{Level, TopicFilter};

/// Maps topic filters to values of `T` (function or device indices).
#[derive(Debug)]
pub struct Router<T> {
    root: Node<T>,
}

#[derive(Debug)]
struct Node<T> {
    /// Children reached by an exact level.
    exact: HashMap<String, Node<T>, BuildHasherDefault<LevelHasher>>,
    /// The child reached by `+`.
    single: Option<Box<Node<T>>>,
    /// Values of filters that end in `#` right here.
    multi: Vec<Entry<T>>,
    /// Values of filters that end exactly at this node.
    here: Vec<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    /// Filters starting with a wildcard must not match `$` topics.
    starts_with_wildcard: bool,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { exact: HashMap::default(), single: None, multi: Vec::new(), here: Vec::new() }
    }
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { root: Node::default() }
    }
}

impl<T: Copy> Router<T> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subscription: topics matching `filter` will yield `value`.
    pub fn insert(&mut self, filter: &TopicFilter, value: T) {
        let entry = Entry { value, starts_with_wildcard: filter.starts_with_wildcard() };
        let mut node = &mut self.root;
        for level in filter.levels() {
            node = match level {
                Level::Exact(name) => node.exact.entry(name.clone()).or_default(),
                Level::Single => node.single.get_or_insert_with(Default::default),
                Level::Multi => {
                    node.multi.push(entry);
                    return;
                }
            };
        }
        node.here.push(entry);
    }

    /// Whether it has no subscription at all.
    pub fn is_empty(&self) -> bool {
        let r = &self.root;
        r.exact.is_empty() && r.single.is_none() && r.multi.is_empty() && r.here.is_empty()
    }

    /// Appends to `out` the value of every subscription matching `topic`, in no
    /// particular order; a value subscribed through several matching filters
    /// appears once per filter.
    pub fn matches(&self, topic: &str, out: &mut Vec<T>) {
        let dollar = topic.starts_with('$');
        collect(&self.root, Some(topic), dollar, true, out);
    }
}

/// Walks the trie along `rest`, the levels of the topic still to match (`None`
/// once every level is consumed), without collecting them first.
fn collect<T: Copy>(node: &Node<T>, rest: Option<&str>, dollar: bool, at_root: bool, out: &mut Vec<T>) {
    // A wildcard at the root must skip `$` topics; deeper wildcards are fine.
    let allowed = |e: &&Entry<T>| !(dollar && at_root && e.starts_with_wildcard);
    // `#` matches this level and everything below, including nothing at all.
    out.extend(node.multi.iter().filter(allowed).map(|e| e.value));
    let Some(rest) = rest else {
        out.extend(node.here.iter().map(|e| e.value));
        return;
    };
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest, None),
    };
    if let Some(child) = node.exact.get(first) {
        collect(child, tail, dollar, false, out);
    }
    if let Some(child) = &node.single {
        if !(dollar && at_root) {
            collect(child, tail, dollar, false, out);
        }
    }
}

/// The hasher of the trie's level names: a multiply-rotate hash, several times
/// cheaper than std's SipHash for short names. The keys are configured filter
/// levels, not network input, so there is no flooding risk to defend against:
/// a topic from the network is only ever looked up, never inserted.
#[derive(Default, Clone, Copy)]
struct LevelHasher(u64);

impl std::hash::Hasher for LevelHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.write(&[byte]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(filters: &[&str]) -> Router<usize> {
        let mut r = Router::new();
        for (i, f) in filters.iter().enumerate() {
            r.insert(&TopicFilter::parse(f).unwrap(), i);
        }
        r
    }

    #[track_caller]
    fn check(filters: &[&str], topic: &str, expected: &[usize]) {
        let mut got = Vec::new();
        router(filters).matches(topic, &mut got);
        got.sort();
        assert_eq!(got, expected, "topic {topic:?}");
    }

    #[test]
    fn finds_every_matching_filter() {
        let filters = ["a/b", "a/+", "a/#", "#", "+/b", "b/#", "a/b/c"];
        check(&filters, "a/b", &[0, 1, 2, 3, 4]);
        check(&filters, "a", &[2, 3]);
        check(&filters, "a/b/c", &[2, 3, 6]);
        check(&filters, "c/d", &[3]);
    }

    #[test]
    fn agrees_with_the_filter_matcher_everywhere() {
        let filters = ["#", "+", "+/+", "a/#", "a/+/c", "$SYS/#", "+/b/#", "a//c", "/#", "a/b/c/#"];
        let topics = ["a", "a/b", "a/b/c", "a//c", "/", "/x", "$SYS/x", "$SYS", "b/b", "x/b/y/z", "a/b/c/d"];
        let r = router(&filters);
        for topic in topics {
            let mut got = Vec::new();
            r.matches(topic, &mut got);
            got.sort();
            let want: Vec<usize> =
                (0..filters.len()).filter(|&i| TopicFilter::parse(filters[i]).unwrap().matches(topic)).collect();
            assert_eq!(got, want, "topic {topic:?}");
        }
    }

    #[test]
    fn dollar_topics_only_reach_explicit_filters() {
        check(&["#", "+/x", "$SYS/#", "$SYS/+"], "$SYS/x", &[2, 3]);
    }
}
