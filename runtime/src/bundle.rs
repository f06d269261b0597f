//! Bundles: a function's module with its manifest (name, version, triggers,
//! limits, config, capabilities, the module's SHA-256), optionally signed with
//! ed25519. `edgefn bundle` makes one, `edgefn keygen` a key pair, and a gateway
//! with `gateway.trusted_keys` deploys only bundles signed by one of them.
//!
//! The file, in order (lengths are little-endian u32):
//!
//! ```text
//! "edgefn-bundle/1\n"   magic, 16 bytes
//! len, manifest         TOML, UTF-8
//! len, module           the .wasm
//! len, signature        0 bytes (unsigned) or 64 (ed25519 over the manifest's bytes)
//! ```
//!
//! The signature covers the manifest, and the manifest names the module's
//! SHA-256: one signature covers both. Signing and verifying use ring, which
//! the TLS stack already links.

use std::collections::BTreeMap;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 16] = b"edgefn-bundle/1\n";
/// Largest manifest read: it is a few hundred bytes of TOML.
const MAX_MANIFEST: usize = 64 << 10;

/// What a bundle says about its module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// The author's version, shown beside the module's digest.
    pub version: String,
    /// SHA-256 of the module, lowercase hex.
    pub module_sha256: String,
    /// Topic filters and timers, as the configuration writes them.
    pub triggers: Vec<crate::trigger::RawTrigger>,
    /// `[functions.limits]` keys, as the configuration file takes them.
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `[functions.allow]`: publish filters and upstream streams; unset keeps the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_publish: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_upstream: Option<Vec<String>>,
}

/// A bundle read from bytes, not yet checked against any key.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    manifest_bytes: Vec<u8>,
    pub module: Vec<u8>,
    signature: Vec<u8>,
}

/// Whether `bytes` start like a bundle (rather than a bare module).
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl Bundle {
    /// Builds a bundle of `module`; signs it when `key` (a secret key as
    /// `edgefn keygen` writes it) is given. The manifest's digest is set here.
    pub fn build(mut manifest: Manifest, module: Vec<u8>, key: Option<&str>) -> Result<Vec<u8>, String> {
        manifest.module_sha256 = sha256_hex(&module);
        let manifest_bytes = toml::to_string(&manifest).map_err(|e| format!("manifest: {e}"))?.into_bytes();
        let signature = match key {
            Some(key) => secret_key(key)?.sign(&manifest_bytes).as_ref().to_vec(),
            None => Vec::new(),
        };
        let mut out = MAGIC.to_vec();
        for part in [&manifest_bytes, &module, &signature] {
            out.extend_from_slice(&u32::try_from(part.len()).map_err(|_| "a part over 4 GiB")?.to_le_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Reads a bundle and checks that the module is the one its manifest names.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Self::read(bytes).map_err(BundleError::Malformed)
    }

    fn read(bytes: &[u8]) -> Result<Bundle, String> {
        let mut rest =
            bytes.strip_prefix(MAGIC.as_slice()).ok_or("not an edgefn bundle (no edgefn-bundle/1 header)")?;
        let mut part = |what: &str, max: usize| -> Result<Vec<u8>, String> {
            let len = rest.get(..4).ok_or_else(|| format!("cut short before its {what}"))?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            if len > max {
                return Err(format!("its {what} claims {len} bytes, over {max}"));
            }
            let body = rest.get(4..4 + len).ok_or_else(|| format!("cut short inside its {what}"))?.to_vec();
            rest = &rest[4 + len..];
            Ok(body)
        };
        let manifest_bytes = part("manifest", MAX_MANIFEST)?;
        let module = part("module", usize::MAX)?;
        let signature = part("signature", 64)?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after its signature", rest.len()));
        }
        if !(signature.is_empty() || signature.len() == 64) {
            return Err(format!("a signature of {} bytes; ed25519 signatures have 64", signature.len()));
        }
        let text = std::str::from_utf8(&manifest_bytes).map_err(|_| "its manifest is not UTF-8")?;
        let manifest: Manifest = toml::from_str(text).map_err(|e| format!("its manifest: {}", e.message()))?;
        let digest = sha256_hex(&module);
        if digest != manifest.module_sha256 {
            return Err(format!(
                "its module does not match its manifest: SHA-256 {digest}, the manifest says {}",
                manifest.module_sha256
            ));
        }
        Ok(Bundle { manifest, manifest_bytes, module, signature })
    }

    /// Checks the signature against `trusted` public keys (hex). With no
    /// trusted keys every bundle is accepted, signed or not.
    pub fn verify(&self, trusted: &[String]) -> Result<(), BundleError> {
        if trusted.is_empty() {
            return Ok(());
        }
        if self.signature.is_empty() {
            return Err(BundleError::Unsigned);
        }
        let signed_by_trusted = trusted
            .iter()
            .filter_map(|k| unhex(k))
            .any(|key| UnparsedPublicKey::new(&ED25519, key).verify(&self.manifest_bytes, &self.signature).is_ok());
        if signed_by_trusted {
            Ok(())
        } else {
            Err(BundleError::Untrusted)
        }
    }
}

/// Why a bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle, cut short, or a module that is not the one its manifest names.
    #[error("{0}")]
    Malformed(String),
    /// Not signed, where the gateway takes only signed bundles.
    #[error(
        "it is not signed, and this gateway takes only bundles signed by one of gateway.trusted_keys (edgefn bundle \
         --sign KEY)"
    )]
    Unsigned,
    /// Signed, by no key the gateway trusts (or altered after signing).
    #[error(
        "its signature does not verify with any of gateway.trusted_keys (signed by another key, or altered after \
         signing)"
    )]
    Untrusted,
}

/// A new key pair: (secret key, public key), both hex. The secret is the
/// 32-byte ed25519 seed.
pub fn keygen() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "the system's random source failed")?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| format!("key: {e}"))?;
    Ok((hex(&seed), hex(pair.public_key().as_ref())))
}

fn secret_key(text: &str) -> Result<Ed25519KeyPair, String> {
    let seed = unhex(text).filter(|s| s.len() == 32).ok_or("the key is not a secret key made by edgefn keygen")?;
    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| format!("the key: {e}"))
}

/// Whether `text` is a public key as `edgefn keygen` writes it.
pub fn valid_public_key(text: &str) -> bool {
    unhex(text).is_some_and(|k| k.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "echo".into(),
            version: "1.0.0".into(),
            module_sha256: String::new(),
            triggers: vec![crate::trigger::RawTrigger::topic("a/+")],
            limits: BTreeMap::from([("fuel".into(), 5_000)]),
            config: BTreeMap::from([("k".into(), "v".into())]),
            allow_publish: Some(vec!["out/#".into()]),
            allow_upstream: None,
        }
    }

    #[test]
    fn a_signed_bundle_verifies_with_its_key_and_no_other() {
        let (secret, public) = keygen().unwrap();
        let (_, other) = keygen().unwrap();
        let bytes = Bundle::build(manifest(), b"\0asm module".to_vec(), Some(&secret)).unwrap();
        assert!(is_bundle(&bytes));
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.manifest.triggers, [crate::trigger::RawTrigger::topic("a/+")]);
        assert_eq!(bundle.module, b"\0asm module");
        bundle.verify(&[other.clone(), public]).unwrap();
        let err = bundle.verify(&[other]).unwrap_err();
        assert_eq!(err, BundleError::Untrusted);
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn unsigned_altered_and_mismatched_bundles_are_refused_with_the_reason() {
        let (secret, public) = keygen().unwrap();
        let unsigned = Bundle::parse(&Bundle::build(manifest(), b"m".to_vec(), None).unwrap()).unwrap();
        unsigned.verify(&[]).unwrap();
        assert_eq!(unsigned.verify(std::slice::from_ref(&public)), Err(BundleError::Unsigned));

        // The manifest changed after signing (a wider capability, say): the signature fails.
        let mut signed = Bundle::build(manifest(), b"m".to_vec(), Some(&secret)).unwrap();
        let at = signed.windows(5).position(|w| w == b"out/#").unwrap();
        signed[at..at + 3].copy_from_slice(b"any");
        let altered = Bundle::parse(&signed).unwrap();
        assert_eq!(altered.verify(&[public]), Err(BundleError::Untrusted));

        // The module swapped: its digest no longer matches, signed or not.
        let mut swapped = Bundle::build(manifest(), b"m".to_vec(), Some(&secret)).unwrap();
        let at = swapped.len() - 64 - 4 - 1;
        swapped[at] = b'x';
        let err = Bundle::parse(&swapped).unwrap_err();
        assert!(matches!(&err, BundleError::Malformed(m) if m.contains("does not match its manifest")), "{err}");

        assert!(Bundle::parse(b"\0asm").unwrap_err().to_string().contains("not an edgefn bundle"));
        let cut = Bundle::build(manifest(), b"m".to_vec(), None).unwrap();
        assert!(Bundle::parse(&cut[..cut.len() - 3]).unwrap_err().to_string().contains("cut short"));
    }
}
