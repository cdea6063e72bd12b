//! Strict JSON for security decisions: duplicate member names are refused at every depth.
//!
//! RFC 8259 §4 says member names *should* be unique and leaves duplicates to the parser;
//! `serde_json` keeps the last one. When two parties may parse the same bytes (a token's issuer
//! and Latch, an approver's view and the grant, a DPoP proof and the resource server), "last one
//! wins" lets one document mean two things. RFC 7515 §5.2 and RFC 7519 §4 allow a JWS/JWT
//! recipient to reject duplicates, and Latch does, in token headers and claims, JWKS documents,
//! DPoP proofs and request bodies.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a document was refused. The message never quotes the document (it may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON, or JSON that does not fit the expected shape (serde's message, which names
    /// positions and types, not values).
    #[error("{0}")]
    Invalid(String),
    /// An object repeats a member name (at any depth).
    #[error("duplicate member name `{0}`")]
    DuplicateMember(String),
}

/// A [`Value`] parsed with duplicate member names refused at every depth.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

const DUPLICATE_PREFIX: &str = "duplicate member name ";

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a json value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<StrictValue, D::Error> {
        StrictValue::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                let shown: String = k.chars().take(64).collect();
                return Err(A::Error::custom(format!("{DUPLICATE_PREFIX}`{shown}`")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(StrictValue(Value::Object(out)))
    }
}

fn classify(e: &serde_json::Error) -> StrictJsonError {
    let msg = e.to_string();
    match msg.strip_prefix(DUPLICATE_PREFIX) {
        Some(rest) => {
            // "`name` at line 1 column 20" → name
            let name = rest
                .strip_prefix('`')
                .and_then(|r| r.split_once('`'))
                .map_or(rest, |(n, _)| n);
            StrictJsonError::DuplicateMember(name.to_owned())
        }
        None => StrictJsonError::Invalid(msg),
    }
}

/// Parses `bytes` as JSON, refusing duplicate member names at any depth.
///
/// # Errors
/// [`StrictJsonError::DuplicateMember`] naming the first repeated name, or
/// [`StrictJsonError::Invalid`] for bytes that are not JSON.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    serde_json::from_slice::<StrictValue>(bytes)
        .map(|v| v.0)
        .map_err(|e| classify(&e))
}

/// Parses `bytes` as JSON with duplicate member names refused at any depth, then deserializes
/// `T` from the result.
///
/// # Errors
/// As [`parse`], or [`StrictJsonError::Invalid`] when the value does not fit `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StrictJsonError> {
    let v = parse(bytes)?;
    serde_json::from_value(v).map_err(|e| StrictJsonError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_every_depth() {
        for doc in [
            r#"{"a":1,"a":2}"#,
            r#"{"k":{"uid":"1","uid":"2"}}"#,
            r#"[{"x":[{"y":1,"y":1}]}]"#,
            r#"{"kubernetes.io":{"serviceaccount":{"uid":"a","name":"b","uid":"c"}}}"#,
        ] {
            assert!(
                matches!(
                    parse(doc.as_bytes()),
                    Err(StrictJsonError::DuplicateMember(_))
                ),
                "{doc}"
            );
        }
        assert_eq!(
            parse(br#"{"k":{"uid":"1","uid":"2"}}"#),
            Err(StrictJsonError::DuplicateMember("uid".into()))
        );
    }

    #[test]
    fn unique_documents_parse_as_serde_json_does() {
        for doc in [
            r#"{"a":1,"b":[1,2.5,-3,"x",null,true],"c":{"a":{}}}"#,
            "[]",
            "\"s\"",
            "18446744073709551615",
            r#"{"a":{"b":1},"b":{"a":1}}"#,
        ] {
            let ours = parse(doc.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, theirs, "{doc}");
        }
    }

    #[test]
    fn typed_parsing_refuses_duplicates_inside_fields() {
        #[derive(Deserialize, Debug)]
        struct Body {
            #[expect(dead_code, reason = "only parsed")]
            params: Value,
        }
        assert!(from_slice::<Body>(br#"{"params":{"a":1}}"#).is_ok());
        assert!(matches!(
            from_slice::<Body>(br#"{"params":{"a":1,"a":2}}"#),
            Err(StrictJsonError::DuplicateMember(_))
        ));
        assert!(matches!(
            from_slice::<Body>(b"{"),
            Err(StrictJsonError::Invalid(_))
        ));
    }

    proptest::proptest! {
        /// Any JSON serde_json writes (which never repeats a name) parses to the same value.
        #[test]
        fn round_trips(keys in proptest::collection::vec("[a-c]{0,2}", 0..6), n in 0i64..1000) {
            let mut m = Map::new();
            for (i, k) in keys.iter().enumerate() {
                let mut inner = Map::new();
                inner.insert(k.clone(), Value::from(n + i as i64));
                m.insert(k.clone(), Value::Object(inner));
            }
            let v = Value::Object(m);
            let text = serde_json::to_vec(&v).unwrap();
            proptest::prop_assert_eq!(parse(&text).unwrap(), v);
        }
    }
}
