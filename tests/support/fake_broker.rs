//! A scripted MQTT 3.1.1 broker on a raw socket, for what real brokers do not
//! do on demand: PUBACKs out of order, repeated, or for packets never sent;
//! silence (no PUBACK, no PINGRESP); a packet over the client's limit. Each
//! connection follows the next [`Script`]; once they are used up, connections
//! behave. Every PUBLISH received is kept, with whether it was acknowledged.
//! Messages given to [`FakeBroker::send_to_subscribers`] go, at QoS 0, to every connection that
//! subscribes, right after its SUBACK.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::probe::WAIT;

/// How one connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Holds PUBACKs and sends them in reverse order, three at a time (or after
    /// 100 ms without a publish); once two publishes are acknowledged and the
    /// client has been quiet for half a second, sends the last PUBACK again.
    ReversedThenRepeated,
    /// Answers the first PUBLISH with a PUBACK for a packet id never used.
    Unsolicited,
    /// Reads everything and answers nothing after CONNACK: no PUBACK, no PINGRESP.
    Mute,
    /// Right after CONNACK, the header of a PUBLISH declaring `len` bytes.
    Oversized { len: usize },
    /// Every PUBACK at once and in order, SUBACK, and PINGRESP; CONNACK says
    /// no session is present, whatever the client asked for.
    Behave,
    /// Like `Behave`, but CONNACK says the session is present.
    Resume,
    /// Like `Behave` until the first SUBSCRIBE is answered, then closes the connection.
    CloseAfterSubscribe,
}

/// One PUBLISH the broker received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (from 1) it came on.
    pub connection: usize,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Whether this broker sent its PUBACK.
    pub acked: bool,
}

#[derive(Default)]
struct Seen {
    /// Connections so far (from their CONNECT), with their client id and script.
    connections: Vec<(String, Script)>,
    received: Vec<Received>,
    /// SUBSCRIBEs: the connection and its filters.
    subscribed: Vec<(usize, Vec<String>)>,
}

struct Scripts {
    /// Only connections with this client id follow the scripts (all, if `None`).
    client_id: Option<String>,
    scripts: Vec<Script>,
    used: usize,
}

/// A topic and a payload.
type Message = (String, Vec<u8>);

pub struct FakeBroker {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
    /// Sent to each connection that subscribes.
    retained: Arc<Mutex<Vec<Message>>>,
}

impl FakeBroker {
    /// Listens on a free loopback port; the n-th connection follows `scripts[n - 1]`.
    pub fn start(scripts: Vec<Script>) -> FakeBroker {
        Self::listen(Scripts { client_id: None, scripts, used: 0 })
    }

    /// Like `start`, counting only connections of `client_id`; others behave.
    pub fn start_for(client_id: &str, scripts: Vec<Script>) -> FakeBroker {
        Self::listen(Scripts { client_id: Some(client_id.to_owned()), scripts, used: 0 })
    }

    fn listen(scripts: Scripts) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let scripts = Arc::new(Mutex::new(scripts));
        let retained = Arc::new(Mutex::new(Vec::new()));
        let to_subscribers = retained.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, scripts, retained) = (shared.clone(), scripts.clone(), to_subscribers.clone());
                std::thread::spawn(move || serve(stream, &scripts, &seen, &retained));
            }
        });
        FakeBroker { port, seen, retained }
    }

    /// Sends `payload` on `topic` (QoS 0) to every connection that subscribes from now on.
    pub fn send_to_subscribers(&self, topic: &str, payload: &[u8]) {
        self.retained.lock().unwrap().push((topic.to_owned(), payload.to_vec()));
    }

    /// Waits until `n` scripted connections have sent CONNECT.
    pub fn wait_connections(&self, n: usize) {
        self.wait(&format!("connection {n}"), |s| s.connections.len() >= n);
    }

    /// Waits until `pred` holds for the publishes received so far.
    pub fn wait_received(&self, what: &str, pred: impl Fn(&[Received]) -> bool) {
        self.wait(what, |s| pred(&s.received));
    }

    /// Waits until connection `n` has subscribed.
    pub fn wait_subscribed(&self, n: usize) -> Vec<String> {
        self.wait(&format!("a SUBSCRIBE on connection {n}"), |s| s.subscribed.iter().any(|(c, _)| *c == n));
        let s = self.seen.lock().unwrap();
        s.subscribed.iter().filter(|(c, _)| *c == n).flat_map(|(_, f)| f.clone()).collect()
    }

    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().received.clone()
    }

    /// The scripts connections followed, in order.
    pub fn connections(&self) -> Vec<Script> {
        self.seen.lock().unwrap().connections.iter().map(|(_, s)| *s).collect()
    }

    fn wait(&self, what: &str, pred: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !pred(&self.seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "waited {WAIT:?} for the fake broker to see {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(
    mut stream: TcpStream,
    scripts: &Mutex<Scripts>,
    seen: &Mutex<Seen>,
    retained: &Mutex<Vec<(String, Vec<u8>)>>,
) {
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = Vec::new();
    // Set by CONNECT: which connection this is (0: not scripted) and how it behaves.
    let (mut connection, mut script) = (0, Script::Behave);
    // PUBACKs held back (packet id, index into `received`), and how many were sent.
    let mut held: Vec<(u16, usize)> = Vec::new();
    let mut acked = 0;
    let mut last_pkid = None;
    let mut repeated = false;
    let mut last_read = Instant::now();
    let mut chunk = [0u8; 64 << 10];
    loop {
        let quiet = match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_read = Instant::now();
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
            Err(_) => return,
        };
        let mut out = Vec::new();
        let mut close = false;
        while let Some((header, body, used)) = next_packet(&buf) {
            let body = body.to_vec();
            buf.drain(..used);
            match header >> 4 {
                1 => {
                    let client_id = parse_connect(&body);
                    let mut sc = scripts.lock().unwrap();
                    if sc.client_id.as_ref().is_none_or(|id| *id == client_id) {
                        script = sc.scripts.get(sc.used).copied().unwrap_or(Script::Behave);
                        sc.used += 1;
                        let mut s = seen.lock().unwrap();
                        s.connections.push((client_id, script));
                        connection = s.connections.len();
                    }
                    out.extend([0x20, 2, u8::from(script == Script::Resume), 0]);
                    if let Script::Oversized { len } = script {
                        out.push(0x30);
                        out.extend(remaining_length(len));
                        out.extend([0, 1, b'x']);
                    }
                }
                3 => {
                    let (topic, pkid, payload) = parse_publish(header, &body);
                    let index = {
                        let mut s = seen.lock().unwrap();
                        s.received.push(Received { connection, topic, payload, acked: false });
                        s.received.len() - 1
                    };
                    let Some(pkid) = pkid else { continue };
                    match script {
                        Script::Unsolicited => out.extend(puback_bytes(pkid.wrapping_add(30_000))),
                        Script::ReversedThenRepeated => held.push((pkid, index)),
                        Script::Mute => {}
                        _ => puback(&mut out, pkid, index, seen),
                    }
                }
                8 if script != Script::Mute => {
                    let (pkid, filters) = parse_subscribe(&body);
                    out.extend([0x90, 2 + filters.len() as u8]);
                    out.extend(pkid.to_be_bytes());
                    out.extend(filters.iter().map(|_| 1));
                    seen.lock().unwrap().subscribed.push((connection, filters));
                    close = script == Script::CloseAfterSubscribe;
                    for (topic, payload) in retained.lock().unwrap().iter() {
                        out.push(0x30);
                        out.extend(remaining_length(2 + topic.len() + payload.len()));
                        out.extend((topic.len() as u16).to_be_bytes());
                        out.extend(topic.as_bytes());
                        out.extend(payload);
                    }
                }
                12 if script != Script::Mute => out.extend([0xD0, 0]),
                14 => return,
                _ => {}
            }
        }
        if script == Script::ReversedThenRepeated && (held.len() >= 3 || (quiet && !held.is_empty())) {
            for (pkid, index) in held.drain(..).rev() {
                puback(&mut out, pkid, index, seen);
                acked += 1;
                last_pkid = Some(pkid);
            }
        } else if script == Script::ReversedThenRepeated
            && acked >= 2
            && !repeated
            && last_read.elapsed() >= Duration::from_millis(500)
        {
            out.extend(puback_bytes(last_pkid.expect("acknowledged one")));
            repeated = true;
        }
        if !out.is_empty() && stream.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// Appends a PUBACK and marks the publish acknowledged.
fn puback(out: &mut Vec<u8>, pkid: u16, index: usize, seen: &Mutex<Seen>) {
    out.extend(puback_bytes(pkid));
    seen.lock().unwrap().received[index].acked = true;
}

fn puback_bytes(pkid: u16) -> [u8; 4] {
    let [hi, lo] = pkid.to_be_bytes();
    [0x40, 2, hi, lo]
}

/// The first complete packet in `buf`: its first byte, its body, and its length.
fn next_packet(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = *buf.first()?;
    let (mut len, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *buf.get(at)?;
        len |= usize::from(byte & 0x7F) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        assert!(shift <= 21, "a remaining length over four bytes");
    }
    let body = buf.get(at..at + len)?;
    Some((header, body, at + len))
}

fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

fn parse_publish(header: u8, body: &[u8]) -> (String, Option<u16>, Vec<u8>) {
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).expect("a UTF-8 topic");
    let mut at = 2 + topic_len;
    let pkid = ((header >> 1) & 3 > 0).then(|| {
        at += 2;
        u16::from_be_bytes([body[at - 2], body[at - 1]])
    });
    (topic, pkid, body[at..].to_vec())
}

/// The client id of a CONNECT (MQTT 3.1.1: protocol name, level, flags, keep-alive, then the id).
fn parse_connect(body: &[u8]) -> String {
    let name_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let at = 2 + name_len + 4;
    let id_len = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
    String::from_utf8_lossy(&body[at + 2..at + 2 + id_len]).into_owned()
}

/// A SUBSCRIBE's packet id and filters.
fn parse_subscribe(body: &[u8]) -> (u16, Vec<String>) {
    let pkid = u16::from_be_bytes([body[0], body[1]]);
    let (mut filters, mut at) = (Vec::new(), 2);
    while at + 2 <= body.len() {
        let len = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        filters.push(String::from_utf8_lossy(&body[at + 2..at + 2 + len]).into_owned());
        at += 2 + len + 1;
    }
    (pkid, filters)
}
