//! JSON Schemas (OpenAPI 3.1, JSON Schema 2020-12) of the input rules the use cases enforce,
//! for `#[schema(schema_with = …)]` on input fields: the API document states every rule a
//! well-formed request must follow, so a client (or a fuzzer) can tell a bad request from one
//! the configuration refuses (`422`).
//!
//! Patterns are ECMA-262 regular expressions that also read the same in Python's `re` and
//! Rust's `regex`: `\uXXXX` escapes for the Basic Multilingual Plane, literal characters for
//! the one astral range (tag characters).

use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType,
    Type,
};

use crate::audit::{MAX_ATTRIBUTES_DEPTH, MAX_ATTRIBUTES_KEYS};

/// Characters free text may not hold ([`crate::audit::is_deceptive`] and control characters),
/// as the inside of a regex character class.
const NOT_TEXT: &str = concat!(
    "\\u0000-\\u001F\\u007F-\\u009F",
    "\\u00AD\\u034F\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u180E\\u200B-\\u200F\\u2028-\\u202E",
    "\\u2060-\\u206F\\u3164\\uFEFF\\uFFA0\\uFFF9-\\uFFFB",
    "\u{E0000}-\u{E007F}",
);

/// White space (Rust's `char::is_whitespace`) not already in [`NOT_TEXT`].
const SPACE: &str = " \\u00A0\\u1680\\u2000-\\u200A\\u202F\\u205F\\u3000";

/// White space as `str::trim` sees it, all of it.
const ALL_SPACE: &str =
    "\\t-\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";

fn string(nullable: bool) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(if nullable {
        SchemaType::Array(vec![Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    })
}

/// Free text a human will read, at most `max` characters: no control, bidi, zero-width or
/// other deceptive characters; with `required`, not only white space.
pub fn text(max: usize, required: bool, nullable: bool) -> Object {
    let pattern = if required {
        format!("^[^{NOT_TEXT}]*[^{NOT_TEXT}{SPACE}][^{NOT_TEXT}]*$")
    } else {
        format!("^[^{NOT_TEXT}]*$")
    };
    string(nullable)
        .min_length(required.then_some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .build()
}

/// `schema` with `description` (a field's schema from `schema_with` carries no description of
/// its own: pass the field's).
pub fn described(mut schema: Object, description: &str) -> Object {
    schema.description = Some(description.into());
    schema
}

/// A name (environment, repository, branch, human id): 1–128 ASCII letters, digits and
/// `-_./:`.
pub fn name(nullable: bool) -> Object {
    string(nullable)
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some("^[A-Za-z0-9._:/-]{1,128}$"))
        .build()
}

/// An unsigned integer up to `max` (`null` too with `nullable`), without a `format`: the
/// registry's `int64` would say the bound is 2^63 - 1, and a `u64` takes more.
pub fn unsigned(max: u64, nullable: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(if nullable {
            SchemaType::Array(vec![Type::Integer, Type::Null])
        } else {
            SchemaType::Type(Type::Integer)
        })
        .minimum(Some(utoipa::Number::UInt(0)))
        .maximum(Some(utoipa::Number::UInt(
            usize::try_from(max).unwrap_or(usize::MAX),
        )))
        .build()
}

/// A tool outcome: 1–32 of `a-z`, `0-9`, `_`.
pub fn outcome() -> Object {
    string(false)
        .min_length(Some(1))
        .max_length(Some(32))
        .pattern(Some("^[a-z0-9_]{1,32}$"))
        .build()
}

/// A value that is not only white space.
pub fn not_blank() -> Object {
    string(false)
        .min_length(Some(1))
        .pattern(Some(format!("[^{ALL_SPACE}]")))
        .build()
}

/// Tool-use `attributes`: an object of at most [`MAX_ATTRIBUTES_KEYS`] keys (counted over
/// every level), nested at most [`MAX_ATTRIBUTES_DEPTH`] levels, keys of [`text`] (1–128),
/// strings without NUL. The whole serializes to at most
/// [`MAX_ATTRIBUTES_BYTES`](crate::audit::MAX_ATTRIBUTES_BYTES) bytes (the byte and total key
/// bounds are stated in the description only: JSON Schema cannot count across levels).
pub fn attributes() -> Object {
    let mut o = attributes_level(1);
    o.description = Some(format!(
        "free-form details: at most {MAX_ATTRIBUTES_KEYS} keys over all levels, {} bytes serialized, \
         nested at most {MAX_ATTRIBUTES_DEPTH} levels; never credentials",
        crate::audit::MAX_ATTRIBUTES_BYTES
    ));
    o
}

/// The object at nesting `depth` (1: `attributes` itself).
fn attributes_level(depth: usize) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_ATTRIBUTES_KEYS))
        .property_names(Some(text(128, true, false)))
        .additional_properties(Some(AdditionalProperties::RefOr(
            attribute_value(depth).into(),
        )))
        .build()
}

/// A value inside a container at nesting `depth`: scalars, and below the depth bound, objects
/// and arrays one level deeper.
fn attribute_value(depth: usize) -> Schema {
    let scalars = ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![
            Type::Null,
            Type::Boolean,
            Type::Number,
        ]))
        .build();
    let strings = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[^\\u0000]*$"))
        .build();
    let mut any = AnyOfBuilder::new().item(scalars).item(strings);
    if depth < MAX_ATTRIBUTES_DEPTH {
        any = any.item(attributes_level(depth + 1)).item(
            ArrayBuilder::new()
                .items(utoipa::openapi::schema::ArrayItems::RefOrSchema(Box::new(
                    attribute_value(depth + 1).into(),
                )))
                .build(),
        );
    }
    Schema::AnyOf(any.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character: the text patterns (read by the `regex` crate; the document's other
    /// readers use ECMA-262 and Python `re`, which read these escapes the same) accept exactly
    /// what `check_text` accepts.
    #[test]
    fn text_patterns_match_the_text_check() {
        let any = regex::Regex::new(&text(1024, false, false).pattern.unwrap_or_default())
            .expect("pattern");
        let required = regex::Regex::new(&text(1024, true, false).pattern.unwrap_or_default())
            .expect("pattern");
        let not_blank =
            regex::Regex::new(&not_blank().pattern.unwrap_or_default()).expect("pattern");
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let s = c.to_string();
            let checked = crate::audit::check_text("t", &format!("a{c}"), 1024, false).is_ok();
            assert_eq!(
                any.is_match(&format!("a{c}")),
                checked,
                "U+{:04X}",
                c as u32
            );
            let checked = crate::audit::check_text("t", &s, 1024, true).is_ok();
            assert_eq!(required.is_match(&s), checked, "U+{:04X} alone", c as u32);
            assert_eq!(
                not_blank.is_match(&s),
                !s.trim().is_empty(),
                "U+{:04X}",
                c as u32
            );
        }
        assert!(!required.is_match(" \u{3000} "));
        assert!(required.is_match(" x "));
    }

    #[test]
    fn names_are_ascii_words() {
        let re = regex::Regex::new(&name(false).pattern.unwrap_or_default()).expect("pattern");
        for ok in ["sandbox", "acme/payments-api", "refs/heads/main", "a.b_c:d"] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["", "sand box", "x\n", "é", &"x".repeat(129)] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
