//! The broker's token signing keys and their JWK Set.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use latch_core::ports::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{KeyError, MasterKey};

/// Length of an Ed25519 public key in bytes.
const ED25519_PUBLIC_LEN: usize = 32;
/// Length of an uncompressed P-256 point (`0x04 || x || y`) in bytes.
const P256_POINT_LEN: usize = 65;

/// The JWS algorithm the broker signs its tokens with.
///
/// Serialized (and parsed) as its JWA name, `EdDSA` (RFC 8037) or `ES256` (RFC 7518 §3.4);
/// parsing also accepts `eddsa`, `ed25519`, `es256` in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SigningAlg {
    /// EdDSA with Ed25519 (the default).
    #[default]
    #[serde(
        rename = "EdDSA",
        alias = "eddsa",
        alias = "Ed25519",
        alias = "ed25519"
    )]
    EdDsa,
    /// ECDSA with P-256 and SHA-256 (fixed-length `r || s` signatures).
    #[serde(rename = "ES256", alias = "es256")]
    Es256,
}

impl SigningAlg {
    /// The JWA `alg` name: `EdDSA` or `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDsa => "EdDSA",
            SigningAlg::Es256 => "ES256",
        }
    }

    /// The matching `jsonwebtoken` algorithm.
    pub fn jwt_algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            SigningAlg::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    /// Name of the store key blob holding the current signing key of this algorithm:
    /// `jwt-signing-eddsa-current` or `jwt-signing-es256-current`.
    pub fn current_blob_name(self) -> String {
        format!("jwt-signing-{}-current", self.as_str().to_ascii_lowercase())
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signing algorithm name that is neither `EdDSA` nor `ES256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signing algorithm {0:?} (expected EdDSA or ES256)")]
pub struct UnknownSigningAlg(pub String);

impl FromStr for SigningAlg {
    type Err = UnknownSigningAlg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "eddsa" | "ed25519" => Ok(SigningAlg::EdDsa),
            "es256" => Ok(SigningAlg::Es256),
            _ => Err(UnknownSigningAlg(s.to_owned())),
        }
    }
}

/// A public verification key as published in the JWK Set (RFC 7517).
///
/// Its `kid` is the RFC 7638 JWK SHA-256 thumbprint (base64url, unpadded) of the key's required
/// members, so it is stable across restarts and replicas and changes only with the key.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedKey {
    kid: String,
    alg: SigningAlg,
    jwk: Value,
}

impl PublishedKey {
    /// Builds the JWK of a public key: for [`SigningAlg::EdDsa`] the 32 raw Ed25519 bytes
    /// (RFC 8037 `OKP`), for [`SigningAlg::Es256`] the 65-byte uncompressed SEC 1 point
    /// `0x04 || x || y` (RFC 7518 `EC`, `P-256`).
    ///
    /// # Errors
    /// [`KeyError::InvalidPublicKey`] when the length or point format is wrong.
    pub fn from_public_key(alg: SigningAlg, public_key: &[u8]) -> Result<Self, KeyError> {
        let required: Vec<(&str, String)> = match alg {
            SigningAlg::EdDsa => {
                if public_key.len() != ED25519_PUBLIC_LEN {
                    return Err(KeyError::InvalidPublicKey(
                        "Ed25519 public key must be 32 bytes",
                    ));
                }
                let x = URL_SAFE_NO_PAD.encode(public_key);
                vec![
                    ("crv", "Ed25519".to_owned()),
                    ("kty", "OKP".to_owned()),
                    ("x", x),
                ]
            }
            SigningAlg::Es256 => {
                if public_key.len() != P256_POINT_LEN || public_key[0] != 0x04 {
                    return Err(KeyError::InvalidPublicKey(
                        "P-256 public key must be a 65-byte uncompressed point",
                    ));
                }
                let x = URL_SAFE_NO_PAD.encode(&public_key[1..33]);
                let y = URL_SAFE_NO_PAD.encode(&public_key[33..]);
                vec![
                    ("crv", "P-256".to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", x),
                    ("y", y),
                ]
            }
        };
        let kid = jwk_thumbprint(&required);
        let mut jwk = serde_json::Map::new();
        for (name, value) in required {
            jwk.insert(name.to_owned(), Value::String(value));
        }
        jwk.insert("kid".to_owned(), Value::String(kid.clone()));
        jwk.insert("alg".to_owned(), Value::String(alg.as_str().to_owned()));
        jwk.insert("use".to_owned(), Value::String("sig".to_owned()));
        Ok(Self {
            kid,
            alg,
            jwk: Value::Object(jwk),
        })
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm the key verifies.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The JWK (RFC 7517 §4): `kty`, `crv`, `x` (and `y` for EC), `kid`, `alg`, `use: "sig"`.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A `jsonwebtoken` key that verifies signatures made with this key.
    ///
    /// # Errors
    /// [`KeyError::InvalidPublicKey`] if the JWK coordinates do not decode (cannot happen for a
    /// key built by [`from_public_key`](Self::from_public_key)).
    pub fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
        let member = |name: &str| {
            self.jwk
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let key = match self.alg {
            SigningAlg::EdDsa => DecodingKey::from_ed_components(member("x")),
            SigningAlg::Es256 => DecodingKey::from_ec_components(member("x"), member("y")),
        };
        key.map_err(|_| KeyError::InvalidPublicKey("JWK coordinates do not decode"))
    }
}

/// RFC 7638 JWK thumbprint with SHA-256: the required members, sorted by name, serialized as
/// JSON without whitespace, hashed, base64url-encoded without padding.
///
/// The canonical form is built explicitly (sorted here, each name and value serialized by
/// `serde_json`), so it does not depend on `serde_json`'s map ordering features.
fn jwk_thumbprint(required: &[(&str, String)]) -> String {
    let mut members: Vec<&(&str, String)> = required.iter().collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    let mut canonical = String::from("{");
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&Value::from(value.as_str()).to_string());
    }
    canonical.push('}');
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

/// The broker's token signing keys: the current private key (used to sign) and the public keys
/// published in the JWK Set.
///
/// `published` holds the current key first; after a future rotation, older public keys stay in
/// it (and in [`jwks`](Self::jwks)) until every token they signed has expired. Rotation itself
/// is not exposed yet.
///
/// # Security
/// The private key (PKCS#8) lives only inside the [`EncodingKey`], which is zeroized on drop and
/// redacted in `Debug`; it is stored only sealed with the master key. `Debug` of this type
/// prints the algorithm and key ids only.
pub struct SigningKeys {
    alg: SigningAlg,
    current_kid: String,
    encoding_key: EncodingKey,
    /// The same private key, parsed once: `jsonwebtoken::encode` re-parses the PKCS#8 document
    /// (and recomputes the public key) on every call, about 40 % of the cost of a signature.
    signer: Signer,
    published: Vec<PublishedKey>,
}

/// A parsed private key (aws-lc-rs frees and cleanses it on drop).
enum Signer {
    /// RFC 8037 Ed25519.
    EdDsa(Ed25519KeyPair),
    /// RFC 7518 §3.4 ES256, fixed-length `r || s` signatures.
    Es256(EcdsaKeyPair, SystemRandom),
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.published.iter().map(PublishedKey::kid).collect();
        f.debug_struct("SigningKeys")
            .field("alg", &self.alg)
            .field("current_kid", &self.current_kid)
            .field("published_kids", &kids)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl SigningKeys {
    /// Loads the current signing key of `alg` from the store, or generates one when there is
    /// none yet.
    ///
    /// The key is stored as its PKCS#8 document sealed with `master` under
    /// [`SigningAlg::current_blob_name`]. Creation uses
    /// [`put_key_blob_if_absent`](Store::put_key_blob_if_absent), so when several broker
    /// instances start at once exactly one key wins and all of them use it.
    ///
    /// # Errors
    /// * [`KeyError::Store`] when the store fails.
    /// * [`KeyError::Decrypt`] / [`KeyError::Malformed`] / [`KeyError::UnsupportedVersion`] when
    ///   the stored blob cannot be opened, most often because the master key differs from the one
    ///   that sealed it.
    /// * [`KeyError::InvalidSigningKey`] when the decrypted blob is not a key for `alg`.
    /// * [`KeyError::Crypto`] when key generation fails.
    ///
    /// # Security
    /// Only the sealed blob reaches the store; the plaintext PKCS#8 is zeroized after use.
    pub async fn load_or_create(
        store: &dyn Store,
        master: &MasterKey,
        alg: SigningAlg,
    ) -> Result<SigningKeys, KeyError> {
        let name = alg.current_blob_name();
        let (blob, created) = match store.key_blob(&name).await? {
            Some(blob) => (blob, false),
            None => {
                let pkcs8 = generate_pkcs8(alg)?;
                let sealed = master.seal(&name, &pkcs8);
                let stored = store.put_key_blob_if_absent(&name, &sealed).await?;
                let created = stored == sealed;
                (stored, created)
            }
        };
        let pkcs8 = master.open(&name, &blob)?;
        let keys = Self::from_pkcs8(&name, alg, &pkcs8)?;
        if created {
            tracing::info!(alg = %alg, kid = %keys.current_kid, "generated a new token signing key");
        } else {
            tracing::debug!(alg = %alg, kid = %keys.current_kid, "loaded the token signing key");
        }
        Ok(keys)
    }

    /// Generates an ephemeral signing key that is not persisted anywhere (tests, one-shot tools).
    ///
    /// # Errors
    /// [`KeyError::Crypto`] when key generation fails.
    pub fn generate_ephemeral(alg: SigningAlg) -> Result<SigningKeys, KeyError> {
        let pkcs8 = generate_pkcs8(alg)?;
        Self::from_pkcs8("ephemeral", alg, &pkcs8)
    }

    fn from_pkcs8(name: &str, alg: SigningAlg, pkcs8: &[u8]) -> Result<SigningKeys, KeyError> {
        let invalid = |_| KeyError::InvalidSigningKey {
            name: name.to_owned(),
            alg: alg.as_str(),
        };
        let (public_key, encoding_key, signer) = match alg {
            SigningAlg::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(invalid)?;
                (
                    pair.public_key().as_ref().to_vec(),
                    EncodingKey::from_ed_der(pkcs8),
                    Signer::EdDsa(pair),
                )
            }
            SigningAlg::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(invalid)?;
                (
                    pair.public_key().as_ref().to_vec(),
                    EncodingKey::from_ec_der(pkcs8),
                    Signer::Es256(pair, SystemRandom::new()),
                )
            }
        };
        let current = PublishedKey::from_public_key(alg, &public_key)?;
        Ok(SigningKeys {
            alg,
            current_kid: current.kid.clone(),
            encoding_key,
            signer,
            published: vec![current],
        })
    }

    /// The algorithm of the current key.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The key id of the current signing key (JWS header `kid`).
    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    /// The current private key for `jsonwebtoken::encode`, with the header from
    /// [`header`](Self::header).
    ///
    /// # Security
    /// Holds the private key; do not clone it into long-lived places.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }

    /// The published public keys, current first.
    pub fn published(&self) -> &[PublishedKey] {
        &self.published
    }

    /// The published key with this `kid`, if any.
    pub fn published_key(&self, kid: &str) -> Option<&PublishedKey> {
        self.published.iter().find(|k| k.kid == kid)
    }

    /// The JWK Set (RFC 7517 §5) to serve at the broker's `jwks_uri`:
    /// `{"keys": [ {kty, crv, x[, y], kid, alg, "use": "sig"}, … ]}`, current key first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.published.iter().map(|k| k.jwk.clone()).collect();
        json!({ "keys": keys })
    }

    /// A JWS header for the current key: `alg`, `kid`, and `typ` (e.g. `at+jwt`, RFC 9068 §2.1).
    pub fn header(&self, typ: &str) -> Header {
        let mut header = Header::new(self.alg.jwt_algorithm());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.current_kid.clone());
        header
    }

    /// Signs `claims` as a compact JWS (RFC 7515 / RFC 7519) with the current key and the header
    /// from [`header`](Self::header).
    ///
    /// # Errors
    /// [`KeyError::Crypto`] when the claims do not serialize or signing fails (the message does
    /// not include the claims).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        // The compact serialization of RFC 7515 §7.1, as `jsonwebtoken::encode` builds it, but
        // signed with the key parsed once at load.
        let failed = |_| KeyError::Crypto("signing the token failed");
        let header = serde_json::to_vec(&self.header(typ)).map_err(failed)?;
        let claims = serde_json::to_vec(claims).map_err(failed)?;
        let mut out = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 100);
        URL_SAFE_NO_PAD.encode_string(&header, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let signature = match &self.signer {
            Signer::EdDsa(pair) => pair.sign(out.as_bytes()).as_ref().to_vec(),
            Signer::Es256(pair, rng) => pair
                .sign(rng, out.as_bytes())
                .map_err(|_| KeyError::Crypto("signing the token failed"))?
                .as_ref()
                .to_vec(),
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }
}

/// A new PKCS#8 document for `alg` (v2 for Ed25519, v1 for P-256, as aws-lc-rs produces them).
fn generate_pkcs8(alg: SigningAlg) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let rng = SystemRandom::new();
    let document = match alg {
        SigningAlg::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
        SigningAlg::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
    }
    .map_err(|_| KeyError::Crypto("signing key generation failed"))?;
    Ok(Zeroizing::new(document.as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 Appendix A.3: the JWK thumbprint of the example Ed25519 key.
    #[test]
    fn thumbprint_matches_rfc8037_vector() {
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = PublishedKey::from_public_key(SigningAlg::EdDsa, &x).unwrap();
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn alg_names_round_trip() {
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
            assert_eq!(alg.as_str().parse::<SigningAlg>().unwrap(), alg);
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(serde_json::from_str::<SigningAlg>(&json).unwrap(), alg);
        }
        assert_eq!(SigningAlg::default(), SigningAlg::EdDsa);
        assert_eq!(
            SigningAlg::EdDsa.current_blob_name(),
            "jwt-signing-eddsa-current"
        );
        assert_eq!(
            SigningAlg::Es256.current_blob_name(),
            "jwt-signing-es256-current"
        );
        assert!("RS256".parse::<SigningAlg>().is_err());
    }

    /// The cached-key signature is the one `jsonwebtoken::encode` makes (Ed25519 is
    /// deterministic), and an ES256 token verifies with `jsonwebtoken::decode`.
    #[test]
    fn sign_matches_jsonwebtoken() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Claims {
            sub: String,
            exp: u64,
        }
        let claims = Claims {
            sub: "agent \u{e9}\"x\"".into(),
            exp: 4_102_444_800,
        };
        let ed = SigningKeys::generate_ephemeral(SigningAlg::EdDsa).unwrap();
        let ours = ed.sign("at+jwt", &claims).unwrap();
        let theirs =
            jsonwebtoken::encode(&ed.header("at+jwt"), &claims, ed.encoding_key()).unwrap();
        assert_eq!(ours, theirs);
        for keys in [
            ed,
            SigningKeys::generate_ephemeral(SigningAlg::Es256).unwrap(),
        ] {
            let token = keys.sign("at+jwt", &claims).unwrap();
            let published = keys.published_key(keys.current_kid()).unwrap();
            let mut validation = jsonwebtoken::Validation::new(keys.alg().jwt_algorithm());
            validation.validate_aud = false;
            let data = jsonwebtoken::decode::<Claims>(
                &token,
                &published.decoding_key().unwrap(),
                &validation,
            )
            .unwrap();
            assert_eq!(data.claims, claims);
            assert_eq!(data.header.kid.as_deref(), Some(keys.current_kid()));
        }
    }

    #[test]
    fn rejects_bad_public_keys() {
        assert!(PublishedKey::from_public_key(SigningAlg::EdDsa, &[0; 31]).is_err());
        assert!(PublishedKey::from_public_key(SigningAlg::Es256, &[0; 65]).is_err());
    }
}
