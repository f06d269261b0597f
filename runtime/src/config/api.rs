//! Validating `[api]`: the address the HTTP API listens on and its tokens.

use std::net::SocketAddr;

use toml::Spanned;

use super::error::ConfigError;
use super::load::Cx;
use super::model::*;
use super::raw::*;

/// Where the API listens when `[api]` gives no `listen`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9750";

impl Cx<'_> {
    pub(super) fn api(&self, raw: &Spanned<RawApi>) -> Result<ApiConfig, ConfigError> {
        let a = raw.get_ref();
        let listen = match &a.listen {
            None => DEFAULT_LISTEN.parse().expect("a valid default"),
            Some(l) => l.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.err(
                    l.span(),
                    "api.listen",
                    "is not an address and port, e.g. \"127.0.0.1:9750\" or \"[::1]:9750\"",
                )
            })?,
        };
        let mut tokens: Vec<ApiToken> = Vec::new();
        for (i, t) in a.tokens.iter().enumerate() {
            let t = t.get_ref();
            let key = |k: &str| format!("api.tokens[{i}].{k}");
            let name = t.name.get_ref().trim().to_owned();
            if name.is_empty() || tokens.iter().any(|other| other.name == name) {
                return Err(self.err(
                    t.name.span(),
                    key("name"),
                    "must be given, and differ from the other tokens' names",
                ));
            }
            let sha256 = parse_sha256(t.sha256.get_ref()).ok_or_else(|| {
                self.err(
                    t.sha256.span(),
                    key("sha256"),
                    "is not a SHA-256 (64 hex digits): `edgefn token` makes a token and prints its line",
                )
            })?;
            if tokens.iter().any(|other| other.sha256 == sha256) {
                return Err(self.err(t.sha256.span(), key("sha256"), "is the same token as an earlier one"));
            }
            let mut scopes = Vec::new();
            for (j, s) in t.scopes.get_ref().iter().enumerate() {
                let scope = match s.get_ref().as_str() {
                    "read" => Scope::Read,
                    "invoke" => Scope::Invoke,
                    "deploy" => Scope::Deploy,
                    other => {
                        return Err(self.err(
                            s.span(),
                            key(&format!("scopes[{j}]")),
                            format!("{other:?} is not a scope: \"read\", \"invoke\" or \"deploy\""),
                        ))
                    }
                };
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
            if scopes.is_empty() {
                return Err(self.err(t.scopes.span(), key("scopes"), "is empty: a token with no scope opens nothing"));
            }
            let rate = match &t.rate_per_s {
                None => None,
                Some(_) => {
                    let rate = self.int(&t.rate_per_s, &key("rate_per_s"), 10, 1, 100_000)? as u32;
                    Some((rate, self.int(&t.burst, &key("burst"), i64::from(rate), 1, 1_000_000)? as u32))
                }
            };
            if t.rate_per_s.is_none() {
                if let Some(b) = &t.burst {
                    return Err(self.err(b.span(), key("burst"), "needs rate_per_s beside it"));
                }
            }
            let routes = match &t.routes {
                None => None,
                Some(list) => {
                    let mut routes = Vec::new();
                    for (j, r) in list.get_ref().iter().enumerate() {
                        let route = crate::sources::http::Route::parse(r.get_ref())
                            .map_err(|e| self.err(r.span(), key(&format!("routes[{j}]")), e))?;
                        routes.push(route.to_string());
                    }
                    if !scopes.contains(&Scope::Invoke) {
                        return Err(self.err(
                            list.span(),
                            key("routes"),
                            "limits the invoke scope, which the token lacks",
                        ));
                    }
                    Some(routes)
                }
            };
            tokens.push(ApiToken { name, sha256, scopes, rate, routes });
        }
        let file = |v: &Spanned<String>, key: &str| {
            let path = self.base_dir.join(v.get_ref());
            match path.is_file() {
                true => Ok(path),
                false => Err(self.err(v.span(), key, format!("{} does not exist or is not a file", path.display()))),
            }
        };
        let tls = match (&a.cert_file, &a.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((file(c, "api.cert_file")?, file(k, "api.key_file")?)),
            _ => {
                return Err(self.err(
                    raw.span(),
                    "api",
                    "cert_file and key_file go together: set both for HTTPS, or neither",
                ))
            }
        };
        Ok(ApiConfig { listen, tokens, tls, open_metrics: a.open_metrics.unwrap_or(false) })
    }
}

/// 64 hex digits as 32 bytes.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
