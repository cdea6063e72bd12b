//! E-mail over SMTP (`lettre`, rustls with aws-lc-rs): one plain-text message per
//! notification, with the notification id as its `Message-ID` (receivers and mail clients can
//! see a retry is the same message).
//!
//! # Security
//! TLS is implicit (`tls`) or a required STARTTLS (`starttls`: no downgrade; credentials are
//! never sent in clear); `none` is for a relay on loopback only. The password lives in a
//! `SecretString` and the transport's `Debug` is never printed. Header values are set through
//! `lettre`'s builder (which encodes them), and the agent's text in the body is escaped to one
//! line per field.

use async_trait::async_trait;
use latch_core::notify::{ApprovalNotice, DeliveryError, Notification, NotificationChannel};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::{human_secs, line, source_of};
use crate::config::SmtpTls;

/// Where and how to send.
pub struct SmtpSettings {
    /// Server host.
    pub host: String,
    /// Port (default by `tls`: 465, 587, 25).
    pub port: Option<u16>,
    /// Connection protection.
    pub tls: SmtpTls,
    /// User name and password, when the server authenticates.
    pub credentials: Option<(String, SecretString)>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Deadline of one SMTP command.
    pub timeout: std::time::Duration,
}

/// An SMTP channel.
pub struct EmailChannel {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// A channel named `name` sending through `s`.
    ///
    /// # Errors
    /// A message when an address does not parse or TLS cannot be set up.
    pub fn new(name: String, s: SmtpSettings) -> Result<Self, String> {
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("notification channel `{name}`: address `{a}`: {e}"))
        };
        let from = parse(&s.from)?;
        let to = s.to.iter().map(|a| parse(a)).collect::<Result<_, _>>()?;
        let builder = match s.tls {
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                s.host.as_str(),
            )),
        }
        .map_err(|e| format!("notification channel `{name}`: TLS: {e}"))?;
        let mut builder = builder.timeout(Some(s.timeout));
        if let Some(port) = s.port {
            builder = builder.port(port);
        }
        if let Some((user, pw)) = s.credentials {
            builder = builder.credentials(Credentials::new(user, pw.expose_secret().to_owned()));
        }
        Ok(Self {
            name,
            transport: builder.build(),
            from,
            to,
        })
    }
}

/// The subject line: what is asked, in one escaped line.
pub fn subject(n: &ApprovalNotice) -> String {
    line(
        &format!(
            "[Latch] Approval needed: {} on {} ({})",
            n.actions.join(", "),
            n.resource,
            n.environment
        ),
        200,
    )
}

/// The plain-text body: every field on its own escaped line, then the console URL (or, when
/// the console is not served, the `latch approve` command).
pub fn text(n: &ApprovalNotice) -> String {
    let rows = [
        ("Request", n.request_id.clone()),
        ("Task", n.task_id.clone()),
        ("Resource", n.resource.clone()),
        ("Environment", n.environment.clone()),
        ("Sensitivity", n.sensitivity.clone()),
        ("Actions", n.actions.join(", ")),
        ("TTL", human_secs(n.ttl_secs)),
        ("Task purpose", n.purpose.clone()),
        ("Justification", n.justification.clone()),
        ("Repository / branch", source_of(n)),
        ("Workload", n.workload.clone()),
        (
            "On behalf of",
            n.on_behalf_of
                .clone()
                .unwrap_or_else(|| "(nobody named)".into()),
        ),
        ("Approver groups", n.groups.join(", ")),
        ("Request digest", n.digest.clone()),
    ];
    let mut out = String::from("An access request is waiting for your approval.\n\n");
    for (k, v) in rows {
        out.push_str(&format!("{k}: {}\n", line(&v, 1000)));
    }
    match &n.console_url {
        Some(url) => out.push_str(&format!("\nReview it in the Latch console:\n{url}\n")),
        None => out.push_str(&format!(
            "\nReview and approve it with:\nlatch approve {}\n",
            line(&n.request_id, 200)
        )),
    }
    out
}

#[async_trait]
impl NotificationChannel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "email"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject(&n.notice))
            .message_id(Some(format!("<{}@latch>", n.id)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let msg = b
            .body(text(&n.notice))
            .map_err(|_| DeliveryError("could not build the e-mail".into()))?;
        self.transport.send(msg).await.map(|_| ()).map_err(|e| {
            let what = if e.is_permanent() {
                "the SMTP server refused the message"
            } else if e.is_transient() {
                "the SMTP server deferred the message"
            } else if e.is_timeout() {
                "the SMTP server did not answer in time"
            } else {
                "could not talk to the SMTP server"
            };
            DeliveryError(what.into())
        })
    }
}
