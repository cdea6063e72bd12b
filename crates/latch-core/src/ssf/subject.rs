//! Subject identifiers (RFC 9493) and the complex subjects of SSF 1.0 §3.3: the ones Latch
//! puts in the `sub_id` of what it transmits, and the human a received SET names.

use serde_json::{Map, Value, json};

use crate::broker::valid_human_id;

/// `{"format": "opaque", "id": …}` (RFC 9493 §3.2): an identifier only its issuer
/// interprets (Latch's task, lease and freeze ids, human ids without an issuer).
pub fn opaque(id: &str) -> Value {
    json!({"format": "opaque", "id": id})
}

/// `{"format": "iss_sub", "iss": …, "sub": …}` (RFC 9493 §3.2): a subject of a JWT issuer
/// (a workload: the issuer of its identity token and its stable subject).
pub fn iss_sub(iss: &str, sub: &str) -> Value {
    json!({"format": "iss_sub", "iss": iss, "sub": sub})
}

/// A complex subject (SSF 1.0 §3.3): `{"format": "complex", <member>: <subject id>, …}`, the
/// members in the given order. All describe one principal (a Latch task: its session, the
/// workload acting in it, the human it acts for).
pub fn complex(members: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    m.insert("format".into(), Value::String("complex".into()));
    for (name, id) in members {
        m.insert((*name).to_owned(), id.clone());
    }
    Value::Object(m)
}

/// Longest nesting of `aliases` and complex subjects read (a hostile SET cannot recurse deep).
const MAX_DEPTH: usize = 3;

/// The human a received subject names, as Latch stores the humans tasks act for
/// (`Task::on_behalf_of`, compared ignoring ASCII case), or `None` when it names none.
///
/// Read, in order: a complex subject's `user` member (SSF 1.0 §3.3; other members describe
/// devices, sessions or tenants, never a human); `email` (RFC 9493 §3.2) → the address;
/// `iss_sub` → `sub`, only when `iss` is one of `subject_issuers` (the transmitter's
/// own issuer by default: a `sub` means nothing without its issuer); `opaque` → `id`;
/// `account` → the `acct:` URI without its scheme; `aliases` → the first of
/// its identifiers that names a human. Other formats (phone numbers, DIDs, URIs, JWT ids…)
/// name no human. The value must be a valid human id (`valid_human_id`: 1–128 ASCII letters,
/// digits and `._@+-`), else `None`.
///
/// # Security
/// Only called on claims whose signature, issuer and audience were verified. Which of these
/// formats a transmitter may use is its operator's choice; an identity provider that can name
/// any human can already end their sessions at every relying party.
pub fn human_of(sub_id: &Value, subject_issuers: &[String]) -> Option<String> {
    human_at(sub_id, subject_issuers, 0)
}

fn human_at(sub_id: &Value, subject_issuers: &[String], depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return None;
    }
    let s = |k: &str| sub_id.get(k).and_then(Value::as_str);
    let found = match s("format")? {
        "complex" => return human_at(sub_id.get("user")?, subject_issuers, depth + 1),
        "aliases" => {
            return sub_id
                .get("identifiers")?
                .as_array()?
                .iter()
                .find_map(|id| human_at(id, subject_issuers, depth + 1));
        }
        "email" => s("email")?,
        "iss_sub" => {
            let iss = s("iss")?;
            if !subject_issuers.iter().any(|i| i == iss) {
                return None;
            }
            s("sub")?
        }
        "opaque" => s("id")?,
        "account" => s("uri")?.strip_prefix("acct:")?,
        _ => return None,
    };
    valid_human_id(found).then(|| found.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuers() -> Vec<String> {
        vec!["https://idp.example".to_owned()]
    }

    #[test]
    fn simple_formats_name_their_human() {
        let i = issuers();
        let cases = [
            (
                json!({"format": "email", "email": "alice@example.com"}),
                Some("alice@example.com"),
            ),
            (iss_sub("https://idp.example", "alice"), Some("alice")),
            (opaque("alice"), Some("alice")),
            (
                json!({"format": "account", "uri": "acct:alice@example.com"}),
                Some("alice@example.com"),
            ),
            (
                json!({"format": "phone_number", "phone_number": "+12065550100"}),
                None,
            ),
            (json!({"format": "did", "url": "did:example:123"}), None),
            (json!({"format": "email"}), None),
            (json!({"id": "alice"}), None),
        ];
        for (id, want) in cases {
            assert_eq!(human_of(&id, &i).as_deref(), want, "{id}");
        }
    }

    #[test]
    fn an_iss_sub_of_another_issuer_names_nobody() {
        let id = iss_sub("https://other.example", "alice");
        assert_eq!(human_of(&id, &issuers()), None);
    }

    #[test]
    fn a_complex_subject_names_its_user_member_only() {
        let i = issuers();
        let with_user = complex(&[
            ("device", opaque("laptop-7")),
            ("user", iss_sub("https://idp.example", "bob")),
        ]);
        assert_eq!(human_of(&with_user, &i).as_deref(), Some("bob"));
        let device_only = complex(&[("device", opaque("laptop-7"))]);
        assert_eq!(human_of(&device_only, &i), None);
        let aliases = json!({"format": "aliases", "identifiers": [
            {"format": "phone_number", "phone_number": "+1"}, opaque("carol")]});
        assert_eq!(human_of(&aliases, &i).as_deref(), Some("carol"));
    }

    #[test]
    fn invalid_human_ids_and_deep_nesting_are_refused() {
        let i = issuers();
        assert_eq!(human_of(&opaque("al ice"), &i), None);
        assert_eq!(human_of(&opaque(""), &i), None);
        assert_eq!(human_of(&opaque(&"a".repeat(129)), &i), None);
        let mut deep = opaque("dave");
        for _ in 0..5 {
            deep = complex(&[("user", deep)]);
        }
        assert_eq!(human_of(&deep, &i), None);
    }

    #[test]
    fn complex_subjects_keep_their_members() {
        let c = complex(&[("session", opaque("task_1")), ("user", opaque("alice"))]);
        assert_eq!(
            c,
            json!({"format": "complex", "session": {"format": "opaque", "id": "task_1"},
                   "user": {"format": "opaque", "id": "alice"}})
        );
    }
}
