//! The serverless hello world, on an HTTP route:
//!
//! ```toml
//! [[functions]]
//! name = "hello"
//! module = "hello.wasm"
//! triggers = [{ http = "GET /hello" }]
//! ```
//!
//! `GET /hello?name=Ada` answers `200 {"message":"Hello, Ada!"}`; without a
//! `name`, `400 {"error":"..."}`.

// On the host (unit tests, `cargo check --target <host>`) the crate links std and its panic handler.
#![cfg_attr(target_arch = "wasm32", no_std)]

use edgefn_sdk::heapless::String;
use edgefn_sdk::json::ObjectWriter;
use edgefn_sdk::{http, Error, ErrorKind};

/// Longest query string read, and longest answer written.
const CAP: usize = 256;

fn hello() -> Result<(), Error> {
    let mut query = [0u8; CAP];
    let query = http::query(&mut query)?;
    let mut body: String<CAP> = String::new();
    let mut object = ObjectWriter::new(&mut body)?;
    match name_in(query) {
        Some(name) => {
            let mut message: String<CAP> = String::new();
            for part in ["Hello, ", name, "!"] {
                message.push_str(part).map_err(|_| Error::new(ErrorKind::Capacity, "the name is too long"))?;
            }
            object.string("message", &message)?;
            object.finish()?;
            http::respond(200, "application/json", body.as_bytes())
        }
        None => {
            object.string("error", "give a name: /hello?name=Ada")?;
            object.finish()?;
            http::respond(400, "application/json", body.as_bytes())
        }
    }
}

/// The value of `name` in a query string (`a=1&name=Ada`), if it is there and
/// not empty. Percent-escapes are left as they came.
fn name_in(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| pair.strip_prefix("name=")).filter(|name| !name.is_empty())
}

edgefn_sdk::handler!(hello);

#[cfg(test)]
mod tests {
    use super::name_in;

    #[test]
    fn the_name_is_found_among_the_query_parameters() {
        assert_eq!(name_in("name=Ada"), Some("Ada"));
        assert_eq!(name_in("lang=en&name=Ada"), Some("Ada"));
        assert_eq!(name_in("name="), None);
        assert_eq!(name_in("nickname=Ada"), None);
        assert_eq!(name_in(""), None);
    }
}
