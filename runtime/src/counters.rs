//! One declaration per counter. [`counters!`] takes each counter's name,
//! doc line and kind once, and writes from them the live atomics, the copy the
//! summary JSON and `edgefn functions` print, and the list ([`Counter`]) a
//! reader that names counters (a metrics endpoint) walks.

/// What a counter's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A count that only goes up.
    Total,
    /// A count that only goes up, of events dropped for one reason: every
    /// event has one outcome, and `dropped()` sums these.
    Dropped,
    /// A level that goes up and down.
    Gauge,
}

/// One counter as its declaration tells it.
#[derive(Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: &'static str,
    /// Its doc comment, one line.
    pub help: &'static str,
    pub kind: Kind,
}

impl Counter {
    /// The help text without the doc comment's leading space.
    pub fn help(&self) -> &'static str {
        self.help.trim()
    }
}

/// Declares a set of counters once:
///
/// ```text
/// counters! {
///     /// The live counters.
///     pub struct Live;
///     /// A copy of them.
///     #[derive(Default, Serialize)]
///     pub struct Copy {
///         live {
///             /// Doc, which is also the counter's help.
///             name: Total,
///         }
///         copied {
///             /// Counters kept elsewhere (or levels), set on the copy by its maker.
///             other: Gauge,
///         }
///         /// Fields of the copy that are not counters.
///         pub extra: bool,
///     }
/// }
/// ```
///
/// `Live` gets an `AtomicU64` per `live` counter, `load_into(&mut Copy)` and
/// `by_name`;
/// `Copy` gets a `u64` per counter and then the other fields, `COUNTERS`
/// (every counter, in order), `values()` and `dropped()`. The copy must derive
/// `Default`.
macro_rules! counters {
    (
        $(#[$live_meta:meta])*
        $live_vis:vis struct $live:ident;
        $(#[$copy_meta:meta])*
        $copy_vis:vis struct $copy:ident {
            live { $( $(#[doc = $ldoc:literal])* $lname:ident : $lkind:ident, )* }
            copied { $( $(#[doc = $cdoc:literal])* $cname:ident : $ckind:ident, )* }
            $( $(#[$xmeta:meta])* pub $xname:ident : $xty:ty, )*
        }
    ) => {
        $(#[$live_meta])*
        #[derive(Debug, Default)]
        $live_vis struct $live {
            $( $(#[doc = $ldoc])* pub $lname: ::std::sync::atomic::AtomicU64, )*
        }

        impl $live {
            /// Copies every live counter's value into `copy`.
            pub fn load_into(&self, copy: &mut $copy) {
                $( copy.$lname = self.$lname.load(::std::sync::atomic::Ordering::Relaxed); )*
            }

            /// The live counter of this name, if it is one.
            pub fn by_name(&self, name: &str) -> Option<&::std::sync::atomic::AtomicU64> {
                match name {
                    $( stringify!($lname) => Some(&self.$lname), )*
                    _ => None,
                }
            }
        }

        $(#[$copy_meta])*
        $copy_vis struct $copy {
            $( $(#[doc = $ldoc])* pub $lname: u64, )*
            $( $(#[doc = $cdoc])* pub $cname: u64, )*
            $( $(#[$xmeta])* pub $xname: $xty, )*
        }

        impl $copy {
            /// Every counter, in the order declared.
            pub const COUNTERS: &'static [$crate::counters::Counter] = &[
                $( $crate::counters::Counter {
                    name: stringify!($lname),
                    help: concat!($($ldoc),*),
                    kind: $crate::counters::Kind::$lkind,
                }, )*
                $( $crate::counters::Counter {
                    name: stringify!($cname),
                    help: concat!($($cdoc),*),
                    kind: $crate::counters::Kind::$ckind,
                }, )*
            ];

            /// Each counter with its value, in the order declared.
            pub fn values(&self) -> impl Iterator<Item = (&'static $crate::counters::Counter, u64)> {
                Self::COUNTERS.iter().zip([$(self.$lname,)* $(self.$cname,)*])
            }

            /// Events dropped, for every reason (the counters of kind `Dropped`).
            /// Summed field by field: the list of counters (names, help) stays
            /// out of a binary that does not print it.
            pub fn dropped(&self) -> u64 {
                let dropped = |kind| kind == $crate::counters::Kind::Dropped;
                0 $( + if dropped($crate::counters::Kind::$lkind) { self.$lname } else { 0 } )*
                  $( + if dropped($crate::counters::Kind::$ckind) { self.$cname } else { 0 } )*
            }
        }
    };
}

pub(crate) use counters;

/// Upper bounds of the invocation-time buckets, in microseconds: from a
/// quick function's quarter millisecond to a slow one's five seconds.
pub const DURATION_BOUNDS_US: [u64; 12] =
    [250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000];

/// A function's invocation times, counted into [`DURATION_BOUNDS_US`]'s
/// buckets (and one past the last), with their sum: what Prometheus'
/// histogram reads. Lock-free: a worker adds to it per invocation.
#[derive(Default)]
pub struct Durations {
    buckets: [std::sync::atomic::AtomicU64; DURATION_BOUNDS_US.len() + 1],
    sum_us: std::sync::atomic::AtomicU64,
}

impl Durations {
    pub fn observe(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BOUNDS_US.iter().position(|bound| us <= *bound).unwrap_or(DURATION_BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn snapshot(&self) -> DurationsSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        DurationsSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A copy of [`Durations`]: invocations per bucket (not cumulative; the last
/// past every bound) and the time they took in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DurationsSnapshot {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl DurationsSnapshot {
    /// Invocations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::Ordering::Relaxed;

    use super::Kind;
    use crate::gateway::status::{FunctionCounters, FunctionStatus};
    use crate::gateway::{Stats, StatsSnapshot};

    /// Every counter the summary JSON and `edgefn functions` carry is named,
    /// told and typed by its declaration, once.
    #[test]
    fn every_counter_is_declared_once_with_its_help_and_appears_in_the_json() {
        let json = serde_json::to_value(StatsSnapshot::default()).unwrap();
        let status = serde_json::to_value(FunctionStatus::default()).unwrap();
        for (counters, json) in [(StatsSnapshot::COUNTERS, &json), (FunctionStatus::COUNTERS, &status)] {
            let mut names = HashSet::new();
            for c in counters {
                assert!(names.insert(c.name), "{} declared twice", c.name);
                assert!(c.help().len() > 10 && !c.help().contains("  "), "{}: help {:?}", c.name, c.help());
                assert_eq!(json[c.name], 0, "{} is in the JSON as a number", c.name);
            }
        }
        // And no number in the JSON is a counter left undeclared.
        for (copy, counters) in [(&json, StatsSnapshot::COUNTERS), (&status, FunctionStatus::COUNTERS)] {
            for (key, value) in copy.as_object().unwrap() {
                assert!(!value.is_number() || counters.iter().any(|c| c.name == key), "{key} is not declared");
            }
        }
        let help = StatsSnapshot::COUNTERS.iter().find(|c| c.name == "events_unrouted").unwrap().help();
        assert!(
            help.starts_with("Messages on a topic no function") && help.ends_with("persistent session)."),
            "{help}"
        );
    }

    #[test]
    fn a_copy_carries_each_live_counter_and_dropped_sums_the_drops_alone() {
        let stats = Stats::default();
        for (i, c) in StatsSnapshot::COUNTERS.iter().enumerate() {
            if let Some(live) = live(&stats, c.name) {
                live.store(i as u64 + 1, Relaxed);
            }
        }
        let copy = stats.snapshot();
        let mut drops = 0;
        for (i, (c, value)) in copy.values().enumerate() {
            let expect = if live(&stats, c.name).is_some() { i as u64 + 1 } else { 0 };
            assert_eq!(value, expect, "{}", c.name);
            drops += if c.kind == Kind::Dropped { value } else { 0 };
        }
        assert_eq!(copy.dropped(), drops);
        // The outcomes the summary calls dropped, and no others.
        let c = &copy;
        let named = c.events_malformed
            + c.events_oversized
            + c.queue_full_dropped
            + c.quota_dropped
            + c.quarantine_dropped
            + c.shutdown_dropped
            + c.unknown_function_dropped
            + c.spool_dropped
            + c.spool_orphaned;
        assert_eq!(drops, named);

        let function = FunctionCounters::default();
        function.dropped_spool.store(2, Relaxed);
        function.dropped_queue.store(3, Relaxed);
        function.ok.store(100, Relaxed);
        let mut status = FunctionStatus::default();
        function.load_into(&mut status);
        assert_eq!((status.ok, status.dropped()), (100, 5));
    }

    fn live<'a>(stats: &'a Stats, name: &str) -> Option<&'a std::sync::atomic::AtomicU64> {
        stats.by_name(name)
    }

    #[test]
    fn invocation_times_fall_in_the_first_bucket_that_holds_them_and_add_up() {
        let durations = super::Durations::default();
        for us in [100, 250, 251, 4_000, 7_000_000] {
            durations.observe(std::time::Duration::from_micros(us));
        }
        let s = durations.snapshot();
        assert_eq!(s.buckets.len(), super::DURATION_BOUNDS_US.len() + 1);
        assert_eq!((s.buckets[0], s.buckets[1], s.buckets[4], s.buckets[12]), (2, 1, 1, 1), "{s:?}");
        assert_eq!((s.count(), s.sum_us), (5, 7_004_601));
    }
}
