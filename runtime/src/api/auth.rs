//! Bearer tokens: a request's `Authorization` header against the tokens of
//! `[api]`, kept as SHA-256 digests and compared in constant time. Pure.

use crate::config::{ApiToken, Scope};

/// What a request's credentials allow it.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// The token of this name, which has the scope asked for.
    Granted(String),
    /// No token, or one the gateway does not know: 401.
    Unauthorized,
    /// A known token without the scope: 403.
    Forbidden(String),
}

/// Checks an `Authorization` header's value for a token with scope `needs`.
pub fn check(tokens: &[ApiToken], authorization: Option<&[u8]>, needs: Scope) -> Access {
    let Some(presented) = authorization.and_then(bearer) else { return Access::Unauthorized };
    let digest = ring::digest::digest(&ring::digest::SHA256, presented);
    // Every token is compared, each in constant time: the time taken says
    // nothing of which one (if any) matched, or how closely.
    let mut found = None;
    for token in tokens {
        if same(digest.as_ref(), &token.sha256) {
            found = Some(token);
        }
    }
    match found {
        None => Access::Unauthorized,
        Some(t) if t.scopes.contains(&needs) => Access::Granted(t.name.clone()),
        Some(t) => Access::Forbidden(t.name.clone()),
    }
}

/// The token of a `Bearer` header value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

fn same(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == 32 && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The SHA-256 of a token's text, as `[[api.tokens]]` writes it.
pub fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, text: &str, scopes: &[Scope]) -> ApiToken {
        let sha256 = crate::config::parse_sha256(&sha256_hex(text)).unwrap();
        ApiToken { name: name.into(), sha256, scopes: scopes.to_vec(), rate: None, routes: None }
    }

    #[test]
    fn a_known_token_opens_what_its_scopes_name_and_nothing_else_does() {
        let tokens = [token("grafana", "s3cret", &[Scope::Read]), token("ci", "deploy-me", &[Scope::Deploy])];
        assert_eq!(check(&tokens, Some(b"Bearer s3cret"), Scope::Read), Access::Granted("grafana".into()));
        assert_eq!(check(&tokens, Some(b"bearer   s3cret "), Scope::Read), Access::Granted("grafana".into()));
        assert_eq!(check(&tokens, Some(b"Bearer s3cret"), Scope::Deploy), Access::Forbidden("grafana".into()));
        assert_eq!(check(&tokens, Some(b"Bearer deploy-me"), Scope::Read), Access::Forbidden("ci".into()));
        for wrong in [&b"Bearer s3cre"[..], b"Bearer S3CRET", b"Basic s3cret", b"s3cret", b"Bearer ", b""] {
            assert_eq!(check(&tokens, Some(wrong), Scope::Read), Access::Unauthorized, "{:?}", wrong);
        }
        assert_eq!(check(&tokens, None, Scope::Read), Access::Unauthorized);
        assert_eq!(check(&[], Some(b"Bearer s3cret"), Scope::Read), Access::Unauthorized);
    }
}
