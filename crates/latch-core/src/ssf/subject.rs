//! Subject identifiers (RFC 9493) and the complex subjects of SSF 1.0 §3.3: the ones Latch
//! puts in the `sub_id` of what it transmits, and the human a received SET names.

use regex::Regex;
use serde_json::{Map, Value, json};

use crate::broker::valid_human_id;

/// The subject identifier formats (RFC 9493 §3.2) whose value can name a human, in the order
/// Latch lists them. `complex` and `aliases` are containers, always read for these.
pub const HUMAN_FORMATS: [&str; 4] = ["iss_sub", "email", "opaque", "account"];

/// What one transmitter's subjects may name: the formats read as humans, the issuers whose
/// `iss_sub` subjects count, and which humans it may act for at all.
///
/// # Security
/// With several transmitters configured, `humans` keeps one identity provider from ending the
/// sessions of the humans another one signs in (every transmitter can sign any subject).
#[derive(Debug, Clone)]
pub struct SubjectRules {
    /// Issuers whose `iss_sub` subjects name humans (the transmitter's own by default).
    pub issuers: Vec<String>,
    /// Leaf formats read as humans (a subset of [`HUMAN_FORMATS`]).
    pub formats: Vec<String>,
    /// The humans this transmitter may act for (matched in full, ASCII case ignored); `None`:
    /// any human.
    pub humans: Option<Regex>,
}

impl PartialEq for SubjectRules {
    fn eq(&self, other: &Self) -> bool {
        self.issuers == other.issuers
            && self.formats == other.formats
            && self.humans.as_ref().map(Regex::as_str) == other.humans.as_ref().map(Regex::as_str)
    }
}

impl SubjectRules {
    /// Every human format, `issuers` for `iss_sub`, any human.
    pub fn any_human(issuers: Vec<String>) -> Self {
        Self {
            issuers,
            formats: HUMAN_FORMATS.iter().map(|f| (*f).to_owned()).collect(),
            humans: None,
        }
    }

    /// Compiles a `humans` pattern: the whole human id must match, ASCII case ignored.
    ///
    /// # Errors
    /// The regex syntax error, or a pattern too large to compile.
    pub fn humans_pattern(pattern: &str) -> Result<Regex, String> {
        // Alone first: an unbalanced pattern such as `a)|(b` would otherwise escape the anchors.
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| e.to_string())?;
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| e.to_string())
    }

    /// Whether this transmitter may act for `human`.
    pub fn may_act_for(&self, human: &str) -> bool {
        self.humans.as_ref().is_none_or(|r| r.is_match(human))
    }
}

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
/// its identifiers that names a human. Only the leaf formats in `rules.formats` count; other
/// formats (phone numbers, DIDs, URIs, JWT ids…) name no human. The value must be a valid
/// human id (`valid_human_id`: 1–128 ASCII letters, digits and `._@+-`), else `None`.
/// Whether the transmitter may act for the human found is [`SubjectRules::may_act_for`].
///
/// # Security
/// Only called on claims whose signature, issuer and audience were verified. Which formats a
/// transmitter may use, and for which humans, is its operator's choice (`subject_formats`,
/// `humans`).
pub fn human_of(sub_id: &Value, rules: &SubjectRules) -> Option<String> {
    human_at(sub_id, rules, 0)
}

fn human_at(sub_id: &Value, rules: &SubjectRules, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return None;
    }
    let s = |k: &str| sub_id.get(k).and_then(Value::as_str);
    let format = s("format")?;
    match format {
        "complex" => return human_at(sub_id.get("user")?, rules, depth + 1),
        "aliases" => {
            return sub_id
                .get("identifiers")?
                .as_array()?
                .iter()
                .find_map(|id| human_at(id, rules, depth + 1));
        }
        _ => {}
    }
    if !rules.formats.iter().any(|f| f == format) {
        return None;
    }
    let found = match format {
        "email" => s("email")?,
        "iss_sub" => {
            let iss = s("iss")?;
            if !rules.issuers.iter().any(|i| i == iss) {
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

    fn issuers() -> SubjectRules {
        SubjectRules::any_human(vec!["https://idp.example".to_owned()])
    }

    #[test]
    fn formats_left_out_name_nobody_and_humans_bound_who_may_be_acted_for() {
        let mut r = issuers();
        r.formats = vec!["email".into()];
        assert_eq!(human_of(&opaque("alice"), &r), None);
        assert_eq!(human_of(&iss_sub("https://idp.example", "alice"), &r), None);
        let email = json!({"format": "email", "email": "alice@corp.example"});
        assert_eq!(human_of(&email, &r).as_deref(), Some("alice@corp.example"));
        assert!(r.may_act_for("anyone"));
        r.humans = Some(SubjectRules::humans_pattern(r".*@corp\.example").unwrap());
        assert!(r.may_act_for("alice@corp.example"));
        assert!(r.may_act_for("Alice@CORP.example"));
        assert!(!r.may_act_for("mallory@other.example"));
        assert!(!r.may_act_for("alice@corp.example.evil"), "matched in full");
        assert!(SubjectRules::humans_pattern("(").is_err());
        assert!(
            SubjectRules::humans_pattern("a)|(b").is_err(),
            "cannot escape the anchors"
        );
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
