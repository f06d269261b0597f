//! A plain HTTP/1.1 client for the API tests: one request per connection, as
//! curl sends it, the answer read to its end.

use std::io::{Read, Write};
use std::time::Duration;

/// An answer: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to 127.0.0.1:`port` with a bearer `token` if given.
pub fn request(port: u16, method: &str, path: &str, token: Option<&str>) -> std::io::Result<Answer> {
    request_with_body(port, method, path, token, b"")
}

/// Like [`request`], with a body (sent with its `Content-Length`).
pub fn request_with_body(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<Answer> {
    request_with_headers(port, method, path, token, &[], body)
}

/// Like [`request_with_body`], with more headers.
pub fn request_with_headers(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(&mut stream, port, method, path, token, headers, body)
}

/// Writes the request and reads the answer to its end, over any stream.
fn exchange(
    stream: &mut impl ReadWrite,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    for (name, value) in headers {
        auth.push_str(&format!("{name}: {value}\r\n"));
    }
    let length = if body.is_empty() { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    let head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}{length}Connection: close\r\n\r\n");
    stream.write_all(&[head.as_bytes(), body].concat())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer { status, headers, body: body.to_owned() })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `GET path` over HTTPS, trusting only the CA in `ca_file` (PEM), as
/// `curl --cacert` would.
pub fn https_get(port: u16, ca_file: &std::path::Path, path: &str, token: Option<&str>) -> std::io::Result<Answer> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(std::io::Error::other)?;
    let socket = std::net::TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(&mut rustls::StreamOwned::new(connection, socket), port, "GET", path, token, &[], b"")
}

/// `GET path`; the server must be listening (wait for its log line first).
pub fn get(port: u16, path: &str, token: Option<&str>) -> Answer {
    request(port, "GET", path, token).unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}
