//! A small HTTP client for the Latch API, used by the CLI commands and the demo.

use serde::Serialize;
use serde_json::Value;

/// A client bound to one server and (optionally) one bearer token, or the human's stored
/// sign-in for that server (`latch login`), refreshed as it nears expiry.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    login: Option<std::sync::Arc<tokio::sync::Mutex<crate::credentials::StoredLogin>>>,
    login_error: Option<String>,
    ambient: Option<std::sync::Arc<crate::identity::Ambient>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("signed_in", &self.login.is_some())
            .field(
                "ambient",
                &self.ambient.as_ref().map(|a| a.source().describe()),
            )
            .finish()
    }
}

/// An HTTP answer: status and JSON body (or `null`).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The error code of an error body, if any.
    pub fn code(&self) -> Option<&str> {
        self.body
            .get("error")?
            .get("code")?
            .as_str()
            .or_else(|| self.body.get("code")?.as_str())
    }
    /// A one-line description of an error answer, ending with the next step when there is one
    /// ([`crate::hints::next_step`]); the API's field names are given as the CLI's flags.
    pub fn error_line(&self) -> String {
        match self.body.get("error") {
            Some(e) => {
                let mut line = format!(
                    "{} ({}): {}",
                    crate::render::txt(&e["code"], "?"),
                    self.status,
                    crate::hints::in_cli_words(&crate::render::txt(&e["message"], ""))
                );
                if let Some(next) = e["code"].as_str().and_then(crate::hints::next_step) {
                    line.push_str("; ");
                    line.push_str(next);
                }
                line
            }
            None => format!(
                "http {}: {}",
                self.status,
                crate::render::txt(&self.body, "")
            ),
        }
    }
}

impl Client {
    /// The broker URL this client talks to, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            login: None,
            login_error: None,
            ambient: None,
        }
    }

    /// A client presenting workload tokens from `ambient` (fetched or read again as they
    /// near expiry: see [`crate::identity`]).
    pub fn with_ambient(base: &str, ambient: std::sync::Arc<crate::identity::Ambient>) -> Self {
        Self {
            ambient: Some(ambient),
            ..Self::new(base, None)
        }
    }

    /// The same client, presenting the stored sign-in for its server when it has no token.
    /// A stored sign-in that cannot be read is reported by the first call.
    pub fn with_stored_login(mut self) -> Self {
        if self.token.is_some() {
            return self;
        }
        match crate::credentials::load(&self.base) {
            Ok(Some(l)) => self.login = Some(std::sync::Arc::new(tokio::sync::Mutex::new(l))),
            Ok(None) => {}
            Err(e) => self.login_error = Some(e),
        }
        self
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            login: None,
            login_error: None,
            ambient: None,
            ..self.clone()
        }
    }

    /// The bearer token to send: the given one, else the ambient workload identity's, else the
    /// stored sign-in's (refreshed when due).
    ///
    /// # Errors
    /// The ambient source or the stored sign-in fails (one line, never a token).
    pub async fn bearer(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        if let Some(a) = &self.ambient {
            return a.token().await.map(Some);
        }
        if let Some(e) = &self.login_error {
            return Err(e.clone());
        }
        match &self.login {
            Some(l) => {
                let mut g = l.lock().await;
                crate::credentials::current_token(&self.base, &mut g)
                    .await
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// Sends `rb` with the bearer token, answering (status, body text).
    async fn send_raw(&self, rb: reqwest::RequestBuilder) -> Result<(u16, String), String> {
        let rb = match self.bearer().await? {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| crate::hints::unreachable(&self.base, &e))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.map_err(|e| e.to_string())?))
    }

    /// Sends `rb`; when the broker answers `401 insufficient_user_authentication` (RFC 9470:
    /// the sign-in is too old for a vote or an operator action) to a stored sign-in that has a
    /// refresh token, refreshes it once (fresh groups from the provider) and sends again.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Answer, String> {
        let again = rb.try_clone();
        let a = self.send_once(rb).await?;
        if a.status != 401 || a.code() != Some("insufficient_user_authentication") {
            return Ok(a);
        }
        let (Some(login), Some(again)) = (
            self.token.is_none().then_some(()).and(self.login.as_ref()),
            again,
        ) else {
            return Ok(a);
        };
        {
            let mut g = login.lock().await;
            if g.refresh_token.is_none() {
                return Ok(a);
            }
            // Due now: the next `bearer()` refreshes it.
            g.expires_at_unix_secs = Some(0);
        }
        self.send_once(again).await
    }

    async fn send_once(&self, rb: reqwest::RequestBuilder) -> Result<Answer, String> {
        let (status, text) = self.send_raw(rb).await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// `GET path`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get(&self, path: &str) -> Result<Answer, String> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `GET path`, answered as text (status, body).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String), String> {
        self.send_raw(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<Answer, String> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `POST path` with a form body and HTTP Basic client credentials (RFC 7662 / 7009).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn post_form_basic(
        &self,
        path: &str,
        form: &[(&str, &str)],
        id: &str,
        secret: &str,
    ) -> Result<Answer, String> {
        let rb = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(id, Some(secret))
            .form(form);
        // Client credentials replace the bearer token for this call.
        Self {
            token: None,
            login: None,
            login_error: None,
            ambient: None,
            ..self.clone()
        }
        .send(rb)
        .await
    }
}
