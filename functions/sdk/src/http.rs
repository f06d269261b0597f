//! HTTP requests: a function with a route among its triggers
//! (`{ http = "GET /rooms/{room}/climate" }`) reads the request and answers it.
//! The path is [`crate::event::topic`] and the body [`crate::event::payload`].
//!
//! ```ignore
//! let mut buf = [0u8; 64];
//! let room = edgefn::http::param("room", &mut buf)?.unwrap_or("all");
//! edgefn::http::respond(200, "application/json", b"{\"ok\":true}")?;
//! ```

use crate::{sys, utf8, Error, ErrorKind};

/// The request's method (`GET`, `POST`, ...); empty for other events.
pub fn method(buf: &mut [u8]) -> Result<&str, Error> {
    text(sys::http_text(false, buf), buf, "method")
}

/// The request's query string, without its `?`; empty when it has none.
pub fn query(buf: &mut [u8]) -> Result<&str, Error> {
    text(sys::http_text(true, buf), buf, "query")
}

/// The value of the route's parameter `name` (`{room}`), if the route has it.
pub fn param<'b>(name: &str, buf: &'b mut [u8]) -> Result<Option<&'b str>, Error> {
    match sys::http_param(name, buf) {
        None => Ok(None),
        Some(len) => text(len, buf, "parameter").map(Some),
    }
}

/// The value of the request's header `name` (any case), if it has it. Its
/// credentials (`Authorization`, `Cookie`, `Proxy-Authorization`) are never given.
pub fn header<'b>(name: &str, buf: &'b mut [u8]) -> Result<Option<&'b str>, Error> {
    match sys::http_header(name, buf) {
        None => Ok(None),
        Some(len) => text(len, buf, "header").map(Some),
    }
}

/// Answers the request (status 100 to 599; the last answer wins). The answer
/// goes to the client once the invocation has succeeded; without one the
/// client gets `204 No Content`. Fails when the event is not an HTTP request.
pub fn respond(status: u16, content_type: &str, body: &[u8]) -> Result<(), Error> {
    match sys::http_respond(status, content_type, body) {
        0 => Ok(()),
        _ => Err(Error::new(ErrorKind::Event, "http::respond: this event is not an HTTP request")),
    }
}

fn text<'b>(len: usize, buf: &'b mut [u8], what: &str) -> Result<&'b str, Error> {
    let cap = buf.len();
    let bytes = buf.get(..len).ok_or_else(|| too_large(what, len, cap))?;
    utf8::to_str(bytes)
        .ok_or_else(|| Error::format(ErrorKind::Event, format_args!("the request's {what} is not UTF-8")))
}

#[cold]
#[inline(never)]
fn too_large(what: &str, len: usize, cap: usize) -> Error {
    Error::format(ErrorKind::Event, format_args!("the request's {what} is {len} bytes, over the buffer's {cap}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn off_wasm32_there_is_no_request_to_answer() {
        let mut buf = [0u8; 8];
        assert_eq!(super::method(&mut buf).unwrap(), "");
        assert_eq!(super::param("room", &mut buf).unwrap(), None);
        assert_eq!(super::header("accept", &mut buf).unwrap(), None);
        assert!(super::respond(200, "text/plain", b"hi").is_err());
    }
}
