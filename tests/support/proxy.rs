//! A TCP proxy between the gateway and a broker, so a test can fail the link
//! the way networks do: `cut` resets every connection and refuses new ones,
//! `blackhole` keeps them open but lets nothing through (a half-open link that
//! only keepalives notice), `restore` lets traffic flow again, and `delay`
//! holds every chunk for a while in each direction (a slow link).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FLOWING: u8 = 0;
const CUT: u8 = 1;
const BLACKHOLE: u8 = 2;

pub struct Proxy {
    /// Where the gateway connects.
    pub port: u16,
    state: Arc<AtomicU8>,
    /// Milliseconds each chunk is held before it is forwarded.
    delay_ms: Arc<AtomicU64>,
    /// Both sockets of every connection made, to reset them on `cut`.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // It would forward to itself until out of descriptors (free_port keeps
        // a broker's port out of the range this one comes from).
        assert_ne!(port, target, "the proxy got the port of the broker it forwards to");
        let state = Arc::new(AtomicU8::new(FLOWING));
        let open = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (s, o, d) = (state.clone(), open.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if s.load(SeqCst) == CUT {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(broker) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let mut sockets = o.lock().unwrap();
                sockets.push(client.try_clone().unwrap());
                sockets.push(broker.try_clone().unwrap());
                drop(sockets);
                pump(client.try_clone().unwrap(), broker.try_clone().unwrap(), s.clone(), d.clone());
                pump(broker, client, s.clone(), d.clone());
            }
        });
        Proxy { port, state, delay_ms, open }
    }

    /// Resets every connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.state.store(CUT, SeqCst);
        for socket in self.open.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Keeps connections open (and accepts new ones) but forwards nothing.
    pub fn blackhole(&self) {
        self.state.store(BLACKHOLE, SeqCst);
    }

    pub fn restore(&self) {
        self.state.store(FLOWING, SeqCst);
    }

    /// Holds every chunk `delay` before forwarding it, each way (zero: none).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }
}

/// Copies `from` to `to` while the link flows; holds the bytes while it is a
/// blackhole (they are dropped with the connection if it is cut meanwhile).
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<AtomicU8>, delay_ms: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // The link's latency, not a wait for an event.
            std::thread::sleep(Duration::from_millis(delay_ms.load(SeqCst)));
            while state.load(SeqCst) == BLACKHOLE {
                std::thread::sleep(Duration::from_millis(5));
            }
            if state.load(SeqCst) == CUT || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
