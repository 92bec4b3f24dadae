//! Email in from hosted mailboxes: IMAP polling (RFC 3501; IDLE, RFC 2177).
//!
//! Each mailbox in `intake.imap` (URLs such as
//! `imaps://desk:secret@imap.example.com/INBOX?move=Processed`) has a task of
//! its own. A round fetches the messages not taken yet without marking them
//! (`BODY.PEEK[]`): the unseen ones, or every message when taken messages
//! are moved away. Each is stored exactly as SMTP mail is, and only after the
//! commit is it marked `\Seen` or moved. A crash between the commit and the
//! mark fetches it again; the store knows it by mailbox, `UIDVALIDITY` and
//! UID, so it is taken once. Between rounds the task waits in `IDLE` where
//! the server offers it (at most `intake.imap_poll`), else polls every
//! `intake.imap_poll`. Any failure drops the connection and reconnects with
//! backoff; a message over `intake.max_message_bytes` is left in the mailbox
//! and logged.

use std::{collections::HashSet, fmt, future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use async_imap::{
    Client, Session,
    types::{Fetch, UnsolicitedResponse},
};
use futures_util::TryStreamExt;
use hotline_kit::{bus::outbox::OutboxSignal, telemetry};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use sqlx::PgPool;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{mail, store};

/// How long one command (or the connection) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages fetched and stored per round trip.
const BATCH: usize = 20;
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One configured mailbox.
#[derive(Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    password: String,
    pub folder: String,
    /// Where taken messages go; without it they are marked `\Seen`.
    pub move_to: Option<String>,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

fn decoded(text: &str) -> anyhow::Result<String> {
    Ok(percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .context("not UTF-8 once percent-decoded")?
        .into_owned())
}

impl Mailbox {
    /// Reads `imap[s]://user:password@host[:port][/folder][?move=folder]`;
    /// user, password and folders percent-encoded. Errors never repeat
    /// the password.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(text.trim())
            .map_err(|e| anyhow::anyhow!("an IMAP mailbox is not a URL ({e})"))?;
        let tls = match url.scheme() {
            "imaps" => true,
            "imap" => false,
            other => {
                anyhow::bail!("an IMAP mailbox URL starts imap:// or imaps://, not {other}://")
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .context("an IMAP mailbox URL needs a host")?
            .to_owned();
        let user = decoded(url.username())?;
        let password = decoded(url.password().unwrap_or_default())?;
        anyhow::ensure!(
            !user.is_empty() && !password.is_empty(),
            "the IMAP mailbox on {host} needs user:password@ in its URL"
        );
        let folder = match decoded(url.path().trim_start_matches('/'))? {
            folder if folder.is_empty() => "INBOX".to_owned(),
            folder => folder,
        };
        let mut move_to = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "move" if !value.is_empty() => move_to = Some(value.into_owned()),
                other => anyhow::bail!(
                    "the IMAP mailbox {user}@{host}: unknown or empty option {other:?} (only move=FOLDER)"
                ),
            }
        }
        Ok(Self {
            tls,
            port: url.port().unwrap_or(if tls { 993 } else { 143 }),
            host,
            user,
            password,
            folder,
            move_to,
        })
    }

    /// The mailbox without its password: `imaps://desk@host:993/INBOX`.
    pub fn name(&self) -> String {
        format!(
            "imap{}://{}@{}:{}/{}",
            if self.tls { "s" } else { "" },
            self.user,
            self.host,
            self.port,
            self.folder
        )
    }
}

/// The mailboxes of `intake.imap`, a comma list of URLs.
pub fn mailboxes(list: &str) -> anyhow::Result<Vec<Mailbox>> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(Mailbox::parse)
        .collect()
}

/// Whom IMAPS servers are trusted by: the public roots, and the PEM
/// certificates in `extra_ca` (a private CA, a self-signed server) if set.
pub fn tls(extra_ca: &str) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if !extra_ca.is_empty() {
        for cert in CertificateDer::pem_file_iter(extra_ca)
            .with_context(|| format!("reading intake.imap_ca {extra_ca}"))?
        {
            let cert =
                cert.with_context(|| format!("intake.imap_ca {extra_ca}: a bad certificate"))?;
            roots
                .add(cert)
                .with_context(|| format!("intake.imap_ca {extra_ca}: an unusable certificate"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `what`, within [`COMMAND_TIMEOUT`].
async fn within<T, E>(what: &str, future: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer in {COMMAND_TIMEOUT:?}"))?
        .with_context(|| what.to_owned())
}

pub struct Poller {
    pub pool: PgPool,
    pub relay: OutboxSignal,
    pub tls: TlsConnector,
    /// The longest wait between rounds.
    pub poll: Duration,
    pub max_message_bytes: usize,
}

impl Poller {
    /// Reads `mailbox` until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        mailbox: Mailbox,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let name = mailbox.name();
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut logged_in = false;
            let ended = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                ended = self.connect(&mailbox, &mut logged_in) => ended,
            };
            if logged_in {
                backoff = Duration::from_secs(1);
            }
            if let Err(error) = ended {
                metrics::counter!("hotline_imap_errors_total").increment(1);
                tracing::warn!(
                    mailbox = %name,
                    error = format!("{error:#}"),
                    retry_in = ?backoff,
                    "IMAP mailbox unavailable"
                );
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self, mailbox: &Mailbox, logged_in: &mut bool) -> anyhow::Result<()> {
        let tcp = within(
            "connecting",
            TcpStream::connect((mailbox.host.as_str(), mailbox.port)),
        )
        .await?;
        if mailbox.tls {
            let server = ServerName::try_from(mailbox.host.clone())
                .context("the host is not a valid TLS server name")?;
            let stream = within("the TLS handshake", self.tls.connect(server, tcp)).await?;
            self.read(Client::new(stream), mailbox, logged_in).await
        } else {
            self.read(Client::new(tcp), mailbox, logged_in).await
        }
    }

    /// Logs in and takes messages, round after round, until an error.
    async fn read<T>(
        &self,
        mut client: Client<T>,
        mailbox: &Mailbox,
        logged_in: &mut bool,
    ) -> anyhow::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
    {
        within("reading the greeting", client.read_response())
            .await?
            .context("the server closed the connection before greeting")?;
        let mut session = within("logging in", async {
            client
                .login(&mailbox.user, &mailbox.password)
                .await
                .map_err(|(error, _)| error)
        })
        .await?;
        *logged_in = true;
        let selected = within("selecting the folder", session.select(&mailbox.folder)).await?;
        let validity = selected.uid_validity.unwrap_or_default();
        let capabilities = within("asking for capabilities", session.capabilities()).await?;
        let idle = capabilities.has_str("IDLE");
        let moves = capabilities.has_str("MOVE");
        if let Some(folder) = &mailbox.move_to {
            // Made if missing; an error here means it exists (or the move
            // below will say why not).
            let _ = within("creating the folder", session.create(folder)).await;
        }
        tracing::info!(mailbox = %mailbox.name(), idle, "reading an IMAP mailbox");
        // Messages left in the mailbox for being too large, logged once.
        let mut skipped = HashSet::new();
        loop {
            self.take(&mut session, mailbox, validity, moves, &mut skipped)
                .await?;
            // Mail that arrived while this round ran was announced (EXISTS)
            // in its responses, not to the IDLE to come: look again now
            // rather than wait out the poll.
            let mut arrived = false;
            while let Ok(response) = session.unsolicited_responses.try_recv() {
                arrived |= matches!(
                    response,
                    UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
                );
            }
            if arrived {
                continue;
            }
            if idle {
                let mut handle = session.idle();
                within("starting IDLE", handle.init()).await?;
                let (wait, _interrupt) = handle.wait_with_timeout(self.poll);
                wait.await.context("waiting in IDLE")?;
                session = within("ending IDLE", handle.done()).await?;
            } else {
                tokio::time::sleep(self.poll).await;
            }
        }
    }

    /// One round: every message not taken yet, stored, then marked.
    async fn take<T>(
        &self,
        session: &mut Session<T>,
        mailbox: &Mailbox,
        validity: u32,
        moves: bool,
        skipped: &mut HashSet<u32>,
    ) -> anyhow::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
    {
        let query = if mailbox.move_to.is_some() {
            "UNDELETED"
        } else {
            "UNSEEN UNDELETED"
        };
        let mut uids: Vec<u32> = within("searching", session.uid_search(query))
            .await?
            .into_iter()
            .filter(|uid| !skipped.contains(uid))
            .collect();
        uids.sort_unstable();
        let name = mailbox.name();
        for batch in uids.chunks(BATCH) {
            let sizes = fetch(session, batch, "(UID RFC822.SIZE)").await?;
            let mut wanted = Vec::with_capacity(batch.len());
            for message in &sizes {
                let (Some(uid), Some(size)) = (message.uid, message.size) else {
                    continue;
                };
                if size as usize > self.max_message_bytes {
                    tracing::error!(
                        mailbox = %name,
                        uid,
                        size,
                        limit = self.max_message_bytes,
                        "a message over intake.max_message_bytes is left in the mailbox"
                    );
                    skipped.insert(uid);
                } else {
                    wanted.push(uid);
                }
            }
            if wanted.is_empty() {
                continue;
            }
            let mut taken = Vec::with_capacity(wanted.len());
            // One span per fetch, and one per message within it that
            // `intake.mail_received` carries on, as for SMTP.
            let fetching = tracing::info_span!(
                "imap.fetch",
                otel.kind = "client",
                mailbox = %name,
                messages = wanted.len(),
            );
            let fetched = fetch(session, &wanted, "(UID BODY.PEEK[])")
                .instrument(fetching.clone())
                .await
                .inspect_err(|error| telemetry::failed(&fetching, format_args!("{error:#}")))?;
            for message in fetched {
                let (Some(uid), Some(raw)) = (message.uid, message.body()) else {
                    continue;
                };
                let origin = format!("{name};UIDVALIDITY={validity};UID={uid}");
                let one =
                    tracing::info_span!(parent: &fetching, "imap.message", uid, size = raw.len());
                store::record_mail(
                    &self.pool,
                    &mail::sender(raw),
                    std::slice::from_ref(&name),
                    raw,
                    Some(&origin),
                )
                .instrument(one.clone())
                .await
                .inspect_err(|error| telemetry::failed(&one, format_args!("{error:#}")))
                .context("storing a message")?;
                self.relay.committed();
                metrics::counter!("hotline_imap_messages_total").increment(1);
                taken.push(uid);
            }
            if taken.is_empty() {
                continue;
            }
            let set = uid_set(&taken);
            match &mailbox.move_to {
                Some(folder) if moves => {
                    within("moving taken messages", session.uid_mv(&set, folder)).await?;
                }
                Some(folder) => {
                    within("copying taken messages", session.uid_copy(&set, folder)).await?;
                    mark(session, &set, "+FLAGS.SILENT (\\Deleted)").await?;
                }
                None => mark(session, &set, "+FLAGS.SILENT (\\Seen)").await?,
            }
        }
        Ok(())
    }
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn fetch<T>(session: &mut Session<T>, uids: &[u32], items: &str) -> anyhow::Result<Vec<Fetch>>
where
    T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
{
    let set = uid_set(uids);
    within("fetching", async {
        session.uid_fetch(&set, items).await?.try_collect().await
    })
    .await
}

async fn mark<T>(session: &mut Session<T>, set: &str, flags: &str) -> anyhow::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
{
    within("marking taken messages", async {
        session
            .uid_store(set, flags)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_url_reads_with_defaults_and_options() {
        let plain = Mailbox::parse("imap://desk:s3cret@127.0.0.1").unwrap();
        assert!(!plain.tls);
        assert_eq!(plain.port, 143);
        assert_eq!(plain.folder, "INBOX");
        assert_eq!(plain.move_to, None);
        let tls = Mailbox::parse(
            "imaps://help%40vendor.example:p%2Cw@imap.example:1993/Support%20In?move=Done",
        )
        .unwrap();
        assert!(tls.tls);
        assert_eq!(tls.user, "help@vendor.example");
        assert_eq!(tls.password, "p,w");
        assert_eq!(tls.port, 1993);
        assert_eq!(tls.folder, "Support In");
        assert_eq!(tls.move_to.as_deref(), Some("Done"));
        assert_eq!(
            tls.name(),
            "imaps://help@vendor.example@imap.example:1993/Support In"
        );
    }

    #[test]
    fn a_bad_mailbox_url_is_refused_without_its_password() {
        for url in [
            "pop3://desk:hunter2@host",
            "imap://desk@host",
            "imap://desk:hunter2@host/INBOX?delete=yes",
            "imaps://:hunter2@host",
        ] {
            let error = Mailbox::parse(url).unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
        assert_eq!(
            mailboxes(" imap://a:b@h1 , imaps://c:d@h2/X ")
                .unwrap()
                .len(),
            2
        );
        assert!(format!("{:?}", Mailbox::parse("imap://a:hunter2@h").unwrap()).contains("a@h"));
    }
}
