//! Mail out through the SMTP relay, for every module that sends mail: one
//! way to reach the relay, one way to tell a passing refusal from a final
//! one, and the header that marks our automatic mail.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, Tokio1Executor,
    message::header::{Header, HeaderName, HeaderValue},
};

use crate::config::Secret;

/// The relay, reached over SMTP (`smtp://`, `smtps://`, `?tls=required`).
pub type Relay = AsyncSmtpTransport<Tokio1Executor>;

/// A relay for `url`; `timeout` bounds connecting. The URL may carry a
/// password, so its errors are not printed.
pub fn relay(url: &Secret, setting: &str, timeout: Duration) -> anyhow::Result<Relay> {
    let relay = Relay::from_url(url.expose())
        .map_err(|_| anyhow::anyhow!("{setting} is not a valid smtp:// or smtps:// URL"))?;
    Ok(relay.timeout(Some(timeout)).build())
}

/// Whether the relay's refusal may pass (a 4xx, no answer) rather than be
/// final (a 5xx).
pub fn is_transient(error: &lettre::transport::smtp::Error) -> bool {
    !error.is_permanent()
}

/// `Auto-Submitted` (RFC 3834): marks mail no person wrote, so other
/// desks' robots do not answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoSubmitted(pub &'static str);

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Err("Hotline only writes Auto-Submitted".into())
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.to_owned())
    }
}
