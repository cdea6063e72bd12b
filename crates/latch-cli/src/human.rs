//! How values read in plain output: times as local ISO-8601 with a relative part (`in 9m 58s`),
//! durations as `90s`/`15m`/`1h`, lists as `a, b`, and colour (`--color`, `NO_COLOR`).
//!
//! `--json` output never goes through here: it keeps the API's Unix seconds.

use std::io::IsTerminal;
use std::sync::OnceLock;

use serde_json::Value;

/// `--color`: when plain output may use ANSI colours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (<https://no-color.org>).
    #[default]
    Auto,
    /// Always, even into a pipe.
    Always,
    /// Never.
    Never,
}

static COLOR: OnceLock<ColorChoice> = OnceLock::new();

/// Records the `--color` choice for this process (the first call wins).
pub(crate) fn set_color(choice: ColorChoice) {
    let _ = COLOR.set(choice);
}

/// Whether a stream (stdout when `stdout`, else stderr) gets colours: `--color always`, or
/// `auto` on a terminal with `NO_COLOR` unset or empty.
fn colored(stdout: bool) -> bool {
    match COLOR.get().copied().unwrap_or_default() {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && if stdout {
                    std::io::stdout().is_terminal()
                } else {
                    std::io::stderr().is_terminal()
                }
        }
    }
}

/// `text` in the SGR colour `code` (`31` red, `32` green, `33` yellow) when the stream takes
/// colours, else as is.
pub(crate) fn paint(text: &str, code: u8, stdout: bool) -> String {
    if colored(stdout) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// An access status (`granted`, `denied`, `pending`) coloured for stdout.
pub(crate) fn status_word(s: &str) -> String {
    match s {
        "granted" | "approved" | "active" | "open" => paint(s, 32, true),
        "denied" | "revoked" | "cancelled" | "expired" => paint(s, 31, true),
        "pending" => paint(s, 33, true),
        other => other.to_owned(),
    }
}

/// The `error:` prefix of a line on stderr (red when stderr takes colours).
pub(crate) fn error_prefix() -> String {
    paint("error:", 31, false)
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `9m 58s`, `1h 30m`, `2days 3h`: a duration of whole seconds as humantime writes it.
pub(crate) fn span(secs: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs())).to_string()
}

/// `90s`, `15m`, `1h30m`: a duration as the CLI accepts it (`--ttl`), without spaces.
pub(crate) fn short_duration(secs: i64) -> String {
    span(secs.max(0)).replace(' ', "")
}

/// Whether `v` is an empty JSON array (or absent): a plain list then says so in one line
/// instead of printing nothing.
pub(crate) fn is_empty_list(v: &Value) -> bool {
    v.as_array().is_none_or(Vec::is_empty)
}

/// A Unix time as local ISO-8601 plus how far it is from now:
/// `2026-12-04T09:35:12+01:00 (in 9m 58s)` or `… (3m 2s ago)`.
pub(crate) fn when_at(unix: i64, now: i64) -> String {
    use chrono::TimeZone;
    let iso = match chrono::Local.timestamp_opt(unix, 0) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        }
        chrono::LocalResult::None => unix.to_string(),
    };
    let d = unix - now;
    let rel = match d {
        0 => "now".to_owned(),
        d if d > 0 => format!("in {}", span(d)),
        d => format!("{} ago", span(d)),
    };
    format!("{iso} ({rel})")
}

/// [`when_at`] of a JSON value holding Unix seconds; `default` when it holds none.
pub(crate) fn when(v: &Value, default: &str) -> String {
    v.as_i64()
        .map_or_else(|| default.to_owned(), |t| when_at(t, now_unix()))
}

/// A JSON list of strings as `a, b` (each escaped), `default` when empty or absent; never
/// JSON in plain output.
pub(crate) fn list(v: &Value, default: &str) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| crate::render::txt(i, "?"))
            .collect::<Vec<_>>()
            .join(", "),
        Some(_) | None if v.is_null() || v.is_array() => default.to_owned(),
        _ => crate::render::txt(v, default),
    }
}

/// A point in time given on the command line, as Unix seconds: Unix seconds (`1796285833`),
/// an RFC 3339 time (`2026-12-04T08:00:00Z`), or a duration back from `now` (`1h`, `90s`,
/// `2days`).
///
/// # Errors
/// None of these forms (the message shows each).
pub(crate) fn parse_when(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - d.as_secs() as i64);
    }
    Err(format!(
        "`{s}` is not a time: give a duration back from now (`90s`, `15m`, `1h`), an RFC 3339 \
         time (`2026-12-04T08:00:00Z`) or Unix seconds"
    ))
}

/// clap's parser for `--since`/`--until`: [`parse_when`] against the current time.
///
/// # Errors
/// As [`parse_when`].
pub(crate) fn when_arg(s: &str) -> Result<i64, String> {
    parse_when(s, now_unix())
}

/// clap's parser for durations (`--ttl`, `--wait`): `90s`, `15m`, `1h`, `1h30m`.
///
/// # Errors
/// Not a duration (the message shows the accepted form).
pub(crate) fn duration_arg(s: &str) -> Result<humantime::Duration, String> {
    s.trim().parse::<humantime::Duration>().map_err(|_| {
        format!("`{s}` is not a duration: write it with a unit, e.g. `90s`, `15m` or `1h`")
    })
}

/// The form `--server` takes, for its errors.
const SERVER_FORM: &str = "write it as http://HOST:PORT or https://HOST[:PORT] (--server or \
                           LATCH_SERVER)";

/// Parses `--server` / `LATCH_SERVER`: an `http` or `https` URL of the broker itself, without
/// a path (the CLI adds `/v1/…`), query, fragment or user name. A bare `HOST:PORT` is taken as
/// `http://HOST:PORT` only when HOST is a loopback address (`127.0.0.1`, `[::1]`,
/// `localhost`): the token then never leaves the machine. Anywhere else the scheme is not
/// guessed, since guessing `http` would send the bearer token in clear over the network.
pub(crate) fn server_arg(s: &str) -> Result<String, String> {
    let given = s.trim().trim_end_matches('/');
    if given.is_empty() {
        return Err(format!(
            "the broker URL is empty (unset LATCH_SERVER for the default); {SERVER_FORM}"
        ));
    }
    let full = if given.contains("://") {
        given.to_owned()
    } else {
        let url = reqwest::Url::parse(&format!("http://{given}"))
            .map_err(|_| format!("`{given}` is not a broker URL; {SERVER_FORM}"))?;
        let host = url.host_str().unwrap_or("");
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "`{given}` has no scheme and is not a loopback address, so none is assumed; \
                 {SERVER_FORM}"
            ));
        }
        format!("http://{given}")
    };
    let url = reqwest::Url::parse(&full)
        .map_err(|e| format!("`{given}` is not a broker URL ({e}); {SERVER_FORM}"))?;
    let why = if !matches!(url.scheme(), "http" | "https") {
        Some("its scheme is not http or https")
    } else if url.host().is_none() {
        Some("it names no host")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("it carries a user name (pass the token with --token or LATCH_TOKEN)")
    } else if url.path() != "/" && !url.path().is_empty() {
        Some("it has a path (the CLI adds `/v1/…` itself)")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("it has a query or a fragment")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!(
            "`{given}` is not a broker URL: {why}; {SERVER_FORM}"
        )),
        None => Ok(full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_name_the_broker_itself() {
        for ok in [
            "http://127.0.0.1:8080",
            "https://latch.example.com",
            "http://h:8080/",
        ] {
            assert!(server_arg(ok).is_ok(), "{ok}");
        }
        assert_eq!(server_arg("http://h:8080/").unwrap(), "http://h:8080");
        assert_eq!(
            server_arg("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(server_arg("localhost:9").unwrap(), "http://localhost:9");
        assert_eq!(server_arg("[::1]:8080").unwrap(), "http://[::1]:8080");
        for (bad, why) in [
            ("http://h:8080/v1", "has a path"),
            ("latch.example.com:443", "no scheme"),
            ("10.0.0.5:8080", "no scheme"),
            ("ftp://h", "scheme"),
            ("http://u:p@h:8080", "user name"),
            ("http://h:8080?x=1", "query"),
            ("", "empty"),
        ] {
            let e = server_arg(bad).unwrap_err();
            assert!(
                e.contains(why) && e.contains("http://HOST:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn relative_times_read_both_ways() {
        assert!(when_at(1_000_598, 1_000_000).ends_with("(in 9m 58s)"));
        assert!(when_at(1_000_000, 1_000_062).ends_with("(1m 2s ago)"));
        assert!(when_at(5, 5).ends_with("(now)"));
        assert!(when_at(1_000_000, 0).starts_with("1970-01-1"));
    }

    #[test]
    fn times_on_the_command_line() {
        assert_eq!(parse_when("1h", 10_000), Ok(6_400));
        assert_eq!(parse_when("90s", 100), Ok(10));
        assert_eq!(parse_when("1796285833", 0), Ok(1_796_285_833));
        assert_eq!(parse_when("1970-01-01T00:01:00Z", 0), Ok(60));
        assert!(
            parse_when("yesterday-ish", 0)
                .unwrap_err()
                .contains("`15m`")
        );
        assert!(duration_arg("15").unwrap_err().contains("`15m`"));
        assert_eq!(short_duration(5400), "1h30m");
    }

    #[test]
    fn lists_never_print_json() {
        assert_eq!(list(&serde_json::json!([]), "none"), "none");
        assert_eq!(list(&serde_json::json!(["a", "b"]), "none"), "a, b");
        assert_eq!(list(&Value::Null, "-"), "-");
    }
}
