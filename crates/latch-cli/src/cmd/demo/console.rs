//! The demo's approval through the approval console, as a browser does it: the development
//! sign-in form (`/console/login/dev`, offered because no OpenID Provider is configured), the
//! pending list, the request's page, and its vote form with the CSRF token and the digest read
//! from the page.

use super::Script;

/// A browser for the console: a cookie jar, redirects not followed (each is checked).
fn browser() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

/// The `value` of the hidden input `name` in `html` (the console's forms are rendered by maud as
/// `<input type="hidden" name="…" value="…">`; the values read here are base64url or hex).
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_owned())
}

/// The stable error code of a console error page (its `x-latch-error` header).
fn error_code(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("x-latch-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn page(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let r = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("console: {e}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}

/// Posts the vote form of `page_url` and answers the status, the `Location` and the error code.
async fn post_vote(
    http: &reqwest::Client,
    page_url: &str,
    form: &[(&str, &str)],
) -> Result<(u16, Option<String>, Option<String>), String> {
    let r = http
        .post(page_url)
        .form(form)
        .send()
        .await
        .map_err(|e| format!("console: {e}"))?;
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((r.status().as_u16(), location, error_code(&r)))
}

/// bob signs in to the console with his development token, finds the request in his pending
/// list, opens its page, and approves it through the page's form: the vote carries the CSRF
/// token and the digest the page displayed. Answers whether the approval landed.
pub(super) async fn approve_in_console(
    s: &mut Script,
    base: &str,
    bob_token: &str,
    rid: &str,
    digest: &str,
    console_url: &str,
) -> Result<bool, String> {
    let http = browser()?;
    let page_url = format!("{base}/console/requests/{rid}");
    s.say(format!(
        "the agent's answer points its human to {console_url}"
    ));
    s.check(
        console_url == page_url,
        "the pending answer carries the request's console page",
    );

    // The development sign-in: a form bound to this browser by its login cookie.
    let (_, form) = page(&http, &format!("{base}/console/login/dev")).await?;
    let Some(login) = hidden(&form, "login") else {
        s.check(false, "the console offers the development sign-in form");
        return Ok(false);
    };
    let r = http
        .post(format!("{base}/console/login/dev"))
        .form(&[("login", login.as_str()), ("token", bob_token)])
        .send()
        .await
        .map_err(|e| format!("console: {e}"))?;
    let to_index = r
        .headers()
        .get("location")
        .is_some_and(|l| l == "/console/");
    if !s.check(
        r.status() == 303 && to_index,
        "bob signs in to the console (development sign-in: no OpenID Provider configured)",
    ) {
        return Ok(false);
    }

    let (status, list) = page(&http, &format!("{base}/console/")).await?;
    s.check(
        status == 200 && list.contains(&format!("/console/requests/{rid}")),
        "his pending list links the request",
    );
    let (status, html) = page(&http, &page_url).await?;
    let csrf = hidden(&html, "csrf").unwrap_or_default();
    let shown = hidden(&html, "digest").unwrap_or_default();
    s.check(
        status == 200 && !csrf.is_empty() && shown == digest,
        "its page shows what would be granted, with the digest of exactly that and a CSRF token",
    );

    // Forms the page did not produce are refused.
    let (status, _, code) = post_vote(
        &http,
        &page_url,
        &[
            ("digest", shown.as_str()),
            ("verdict", "approve"),
            ("reason", "forged"),
        ],
    )
    .await?;
    s.check(
        status == 403 && code.as_deref() == Some("csrf_token_invalid"),
        "a vote without the page's CSRF token is refused (csrf_token_invalid)",
    );
    let other = "0".repeat(64);
    let (_, _, code) = post_vote(
        &http,
        &page_url,
        &[
            ("csrf", csrf.as_str()),
            ("digest", other.as_str()),
            ("verdict", "approve"),
            ("reason", "x"),
        ],
    )
    .await?;
    s.check(
        code.as_deref() == Some("approval_digest_mismatch"),
        "a vote for another digest than the page showed is refused",
    );

    let (status, location, code) = post_vote(
        &http,
        &page_url,
        &[
            ("csrf", csrf.as_str()),
            ("digest", shown.as_str()),
            ("verdict", "approve"),
            ("reason", "release window open"),
        ],
    )
    .await?;
    let back = location.as_deref() == Some(&format!("/console/requests/{rid}")[..]);
    let (_, after) = page(&http, &page_url).await?;
    let approved = after.contains("approved") && !after.contains("name=\"verdict\"");
    Ok(s.check(
        status == 303 && back && code.is_none() && approved,
        "bob approves with a reason through the page's form: quorum reached, request approved",
    ))
}

#[cfg(test)]
mod tests {
    use super::hidden;

    #[test]
    fn reads_a_hidden_input() {
        let html = r#"<form><input type="hidden" name="csrf" value="abc_-1"><input type="hidden" name="digest" value="00ff"></form>"#;
        assert_eq!(hidden(html, "csrf").as_deref(), Some("abc_-1"));
        assert_eq!(hidden(html, "digest").as_deref(), Some("00ff"));
        assert_eq!(hidden(html, "login"), None);
    }
}
