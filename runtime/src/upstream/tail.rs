//! `edgefn upstream tail`: subscribe to an upstream broker, decode edgefn batches,
//! drop duplicates and report gaps per stream. The tracker is pure; `run` is the
//! thin MQTT shell around it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// What one record was, seen against what came before on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The next record of its stream.
    InOrder,
    /// New, but sequence numbers `missing` (inclusive) have not been seen before it.
    AfterGap { missing: (u64, u64) },
    /// New, filling an earlier gap: it arrived out of order.
    Late,
    /// Already seen: a resend.
    Duplicate,
}

/// Counts per `gateway/stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamTally {
    /// Distinct records.
    pub received: u64,
    pub duplicates: u64,
    /// Records that arrived after a higher sequence number.
    pub out_of_order: u64,
    /// Sequence numbers from 1 to `last` never seen.
    pub missing: u64,
    pub first: u64,
    pub last: u64,
    #[serde(skip)]
    seen: BTreeSet<u64>,
}

/// Deduplicates and checks ordering per stream.
#[derive(Debug, Default)]
pub struct Tracker {
    pub streams: BTreeMap<String, StreamTally>,
}

impl Tracker {
    pub fn observe(&mut self, gateway: &str, stream: &str, seq: u64) -> Seen {
        let t = self.streams.entry(format!("{gateway}/{stream}")).or_default();
        if !t.seen.insert(seq) {
            t.duplicates += 1;
            return Seen::Duplicate;
        }
        t.received += 1;
        let seen = if t.received == 1 {
            t.first = seq;
            if seq > 1 {
                Seen::AfterGap { missing: (1, seq - 1) }
            } else {
                Seen::InOrder
            }
        } else if seq < t.last {
            t.out_of_order += 1;
            Seen::Late
        } else if seq == t.last + 1 {
            Seen::InOrder
        } else {
            Seen::AfterGap { missing: (t.last + 1, seq - 1) }
        };
        t.last = t.last.max(seq);
        t.missing = t.last - t.received;
        seen
    }

    /// Distinct records across all streams.
    pub fn distinct(&self) -> u64 {
        self.streams.values().map(|t| t.received).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gaps_late_and_duplicates() {
        let mut t = Tracker::default();
        assert_eq!(t.observe("g", "s", 1), Seen::InOrder);
        assert_eq!(t.observe("g", "s", 2), Seen::InOrder);
        assert_eq!(t.observe("g", "s", 5), Seen::AfterGap { missing: (3, 4) });
        assert_eq!(t.observe("g", "s", 2), Seen::Duplicate);
        assert_eq!(t.observe("g", "s", 3), Seen::Late);
        assert_eq!(t.observe("g", "other", 4), Seen::AfterGap { missing: (1, 3) });
        let s = &t.streams["g/s"];
        assert_eq!((s.received, s.duplicates, s.out_of_order, s.missing, s.last), (4, 1, 1, 1, 5));
        assert_eq!(t.distinct(), 5);
    }
}

/// What `edgefn upstream tail` connects to and how long it runs.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub broker: crate::config::BrokerConfig,
    /// Filter to subscribe to, e.g. `edgefn/#`.
    pub topic: String,
    /// Stop after this many distinct records.
    pub count: Option<u64>,
    /// Print only gaps, duplicates and the summary, not every record.
    pub quiet: bool,
}

/// Subscribes and reports until `count` distinct records arrived or `stop` completes.
pub async fn run(opts: TailOptions, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<Tracker> {
    use rumqttc::{AsyncClient, Event, Incoming, QoS};
    let client_id = format!("edgefn-tail-{}", std::process::id());
    let options = crate::mqtt::client_options(&opts.broker, &client_id, None)?;
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut tracker = Tracker::default();
    tokio::pin!(stop);
    let broker = format!("{}:{}", opts.broker.host, opts.broker.port);
    loop {
        if opts.count.is_some_and(|n| tracker.distinct() >= n) {
            break;
        }
        let event = tokio::select! {
            _ = &mut stop => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                eprintln!("tail: connected to {broker}");
                client.try_subscribe(opts.topic.clone(), QoS::AtLeastOnce)?;
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => eprintln!("tail: subscribed to {}", opts.topic),
            Ok(Event::Incoming(Incoming::Publish(p))) => match super::decode(&p.payload) {
                Err(e) => eprintln!("tail: {}: {e}", p.topic),
                Ok(batch) => {
                    for r in &batch.records {
                        let name = format!("{}/{}", batch.gateway, batch.stream);
                        match tracker.observe(&batch.gateway, &batch.stream, r.seq) {
                            Seen::Duplicate => eprintln!("duplicate {name} #{}", r.seq),
                            Seen::AfterGap { missing: (a, b) } => eprintln!("gap {name}: #{a}..#{b} not seen (yet)"),
                            Seen::Late => eprintln!("late {name} #{} (out of order)", r.seq),
                            Seen::InOrder => {}
                        }
                        if !opts.quiet {
                            println!("{name} #{} {} {}", r.seq, r.ts, String::from_utf8_lossy(&r.payload));
                        }
                    }
                }
            },
            Ok(_) => {}
            Err(e) => {
                eprintln!("tail: connection to {broker} failed: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(tracker)
}
