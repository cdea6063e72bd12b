//! Hostile text: what counts as deceptive, how it is escaped for one line of output, and the one
//! check applied to free text a human will read (purposes, justifications, reasons, tool reports).

use std::borrow::Cow;

use crate::error::{ApiError, ErrorCode};

/// Characters that can rewrite or hide what a human sees, or break a line without being a
/// control character: bidi marks, overrides and isolates (U+061C, U+200E–F, U+202A–E,
/// U+2066–9), zero-width and invisible format characters (U+00AD, U+034F, U+180E, U+200B–D,
/// U+2060–64, U+206A–F, U+FEFF, U+FFF9–B), line and paragraph separators (U+2028, U+2029),
/// Hangul and Khmer fillers that render as blanks (U+115F, U+1160, U+17B4, U+17B5, U+3164,
/// U+FFA0), and tag characters (U+E0000–U+E007F).
pub fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

/// `s` made safe for one line of a terminal or text log: control characters (newlines included),
/// bidi controls and zero-width characters become `\u{…}` escapes, and a backslash becomes `\\`,
/// so an escaped value can never pass for a forged line or hide text.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| c == '\\' || c.is_control() || is_deceptive(c))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || is_deceptive(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The one rule for free text a human will read (purpose, justification, reasons, tool-use
/// reports): at most `max` characters, non-blank when `required`, single-line, and free of
/// control, bidi and zero-width characters, so an agent cannot forge or hide lines on an
/// approver's screen or in a log.
///
/// # Errors
/// `invalid_request` naming `field` and the broken bound.
pub(crate) fn check_text(field: &str, v: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if required && v.trim().is_empty() {
        return Err(invalid(format!("`{field}` must not be empty")));
    }
    if v.chars().any(|c| c.is_control() || is_deceptive(c)) {
        return Err(invalid(format!(
            "`{field}` must not contain control, bidi or zero-width characters"
        )));
    }
    if v.chars().count() > max {
        return Err(invalid(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    if matches!(
        crate::error::redact_credentials(v),
        std::borrow::Cow::Owned(_)
    ) {
        return Err(invalid(format!(
            "`{field}` contains what looks like a credential; never paste one into a request"
        )));
    }
    Ok(())
}

fn invalid(msg: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}
