//! The encodings a secret may take in a log line or a body, and the search for them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Percent-encoding of every byte outside RFC 3986's unreserved set.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The needles (encoding, text) that betray `value`: the raw value, base64 (standard and
/// url-safe, padded or not), percent- and form-encoding, JSON and Rust escaping, hex (both
/// cases); for a JWT also its signature segment alone and that signature's bytes re-encoded
/// (the header and payload segments are readable claims, not secret, and are not looked for on
/// their own); for PEM blocks and OpenSSH certificates the base64 body as one string, each full
/// body line, and the decoded bytes in hex (the PEM armour, the certificate's key type and
/// comment are not secret and are not looked for).
pub fn needles(value: &str) -> Vec<(&'static str, String)> {
    let raw = value.as_bytes();
    let json = serde_json::to_string(value).unwrap();
    let debug = format!("{value:?}");
    let mut n = vec![
        ("raw", value.to_owned()),
        ("base64", STANDARD.encode(raw)),
        ("base64 unpadded", STANDARD_NO_PAD.encode(raw)),
        ("base64url", URL_SAFE.encode(raw)),
        ("base64url unpadded", URL_SAFE_NO_PAD.encode(raw)),
        ("percent-encoded", percent(value)),
        ("form-encoded", percent(value).replace("%20", "+")),
        ("json-escaped", json.trim_matches('"').to_owned()),
        ("debug-escaped", debug.trim_matches('"').to_owned()),
        ("hex", hex(raw)),
        ("HEX", hex(raw).to_uppercase()),
    ];
    let segments: Vec<&str> = value.split('.').collect();
    if segments.len() == 3 && value.starts_with("eyJ") {
        let sig = segments[2];
        let bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        n.push(("jwt signature segment", sig.to_owned()));
        n.push(("jwt signature as base64", STANDARD_NO_PAD.encode(&bytes)));
        n.push(("jwt signature as hex", hex(&bytes)));
    }
    if value.contains("-----BEGIN ") {
        let body: Vec<&str> = value
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
            .collect();
        let joined = body.concat();
        n.push(("pem der as hex", hex(&STANDARD.decode(&joined).unwrap())));
        n.push(("pem body", joined));
        // Full 64-character lines; the short last line is too little to say anything.
        n.extend(
            body.iter()
                .filter(|l| l.len() >= 48)
                .map(|l| ("pem body line", (*l).to_owned())),
        );
    }
    if value.contains("-cert-v01@openssh.com ") {
        let blob = value.split_whitespace().nth(1).unwrap();
        n.push(("openssh certificate blob", blob.to_owned()));
        n.push((
            "openssh certificate as hex",
            hex(&STANDARD.decode(blob).unwrap()),
        ));
    }
    n.sort_by(|a, b| a.1.cmp(&b.1));
    n.dedup_by(|a, b| a.1 == b.1);
    n
}

/// Where a needle was found, with the needle masked (never the value itself).
fn context(hay: &str, at: usize, len: usize) -> String {
    let mut from = at.saturating_sub(100);
    while !hay.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (at + len + 60).min(hay.len());
    while !hay.is_char_boundary(to) {
        to += 1;
    }
    format!("{}<SECRET>{}", &hay[from..at], &hay[at + len..to])
}

/// Removes ANSI colour sequences, so that a coloured line cannot hide a value.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Panics listing every (secret, encoding, place) found, the value masked.
pub fn assert_absent(secrets: &[(String, String)], corpora: &[(String, String)]) {
    let mut found = Vec::new();
    for (what, value) in secrets {
        for (enc, needle) in needles(value) {
            for (place, hay) in corpora {
                if let Some(at) = hay.find(&needle) {
                    found.push(format!(
                        "{what} ({enc}) in {place}: …{}…",
                        context(hay, at, needle.len())
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} leak(s):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn needles_cover_the_encodings_of_a_jwt_and_a_pem() {
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ";
    let n = needles(jwt);
    let has = |enc: &str| n.iter().any(|(e, _)| *e == enc);
    assert!(has("jwt signature segment") && has("base64") && has("hex"));
    // A JWT is url-safe: its percent and escaped forms are the raw one, kept once.
    assert_eq!(n.iter().filter(|(_, v)| v == jwt).count(), 1);
    let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let n = needles(pem);
    assert!(n.iter().any(|(e, v)| *e == "pem body" && v == "AAAA"));
    assert!(
        n.iter()
            .any(|(e, v)| *e == "json-escaped" && v.contains("\\n"))
    );
    assert_eq!(strip_ansi("a\u{1b}[2mb\u{1b}[0mc"), "abc");
}
