//! The only place with SQL. Every command runs in one transaction that locks
//! the ticket, applies the domain rule, writes the result, and writes its
//! events to the outbox — all or nothing.

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};
use hotline_kit::{
    batch::Batches,
    bus::outbox::{self, OutboxRows, OutboxSignal},
    db::column,
};
use hotline_proto::events::v1::EventEnvelope;
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::{
        self, ArticleKind, CallDirection, CallOutcome, Change, Channel, Entitlement, Priority,
        Refusal, Status, TicketKey, TicketState,
    },
    events,
};

/// A ticket as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: Uuid,
    pub number: i64,
    pub version: i64,
    pub status: Status,
    pub priority: Priority,
    pub channel: Channel,
    pub subject: String,
    pub contact: Option<String>,
    pub assignee: Option<String>,
    pub awaiting_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `None` until `contracts` has resolved it.
    pub entitlement: Option<Entitlement>,
}

impl Ticket {
    fn state(&self) -> TicketState {
        TicketState {
            status: self.status,
            awaiting_since: self.awaiting_since,
            assignee: self.assignee.clone(),
        }
    }
}

/// One entry of a ticket's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    pub id: Uuid,
    pub ticket_id: Uuid,
    pub kind: ArticleKind,
    pub body: String,
    pub author: String,
    pub call_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Sanitised HTML version of the body, if it came as HTML.
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

/// A file kept with an article; its content is read on its own.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attachment {
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
}

/// A file that comes with a new article.
pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

pub struct NewTicket {
    pub subject: String,
    pub contact: Option<String>,
    pub priority: Priority,
    pub channel: Channel,
    pub idempotency_key: Option<String>,
    pub first: NewArticle,
}

pub struct NewArticle {
    pub kind: ArticleKind,
    pub body: String,
    pub author: String,
    pub call_id: Option<String>,
    /// Adds the article once: a retry with the same key changes nothing.
    pub idempotency_key: Option<String>,
    /// Sanitised already (the API does it).
    pub html: Option<String>,
    pub attachments: Vec<NewAttachment>,
}

/// A change to an existing ticket.
pub enum Command {
    AddArticle {
        article: NewArticle,
        pending_customer: bool,
    },
    /// The new assignee, and (when set) the one the ticket must still have.
    Assign {
        assignee: Option<String>,
        expected: Option<Option<String>>,
    },
    SetPriority(Priority),
    Resolve,
    Close,
    Reopen,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ticket {0} does not exist")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error.into())
    }
}

/// Filters of [`Store::list`]; empty fields do not filter.
#[derive(Debug, Default)]
pub struct Filter {
    pub statuses: Vec<Status>,
    pub awaiting_only: bool,
    pub assignee: Option<String>,
    pub channel: Option<Channel>,
    pub contact: Option<String>,
    pub customer: Option<CustomerFilter>,
    pub text: Option<String>,
    /// Only tickets numbered below this (the cursor).
    pub before_number: Option<i64>,
    pub limit: i64,
}

/// A customer as `tickets list --customer` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerFilter {
    Id(Uuid),
    /// The whole name, compared case-blind (customer names are unique so).
    Name(String),
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: Uuid,
    number: i64,
    version: i64,
    status: String,
    priority: String,
    channel: String,
    subject: String,
    contact: Option<String>,
    assignee: Option<String>,
    awaiting_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    customer_id: Option<Uuid>,
    customer_name: Option<String>,
    project_id: Option<Uuid>,
    project_name: Option<String>,
    asset_serial: Option<String>,
    coverage: Option<String>,
    covered_until: Option<chrono::NaiveDate>,
    entitlement_reason: Option<String>,
}

impl TryFrom<TicketRow> for Ticket {
    type Error = anyhow::Error;

    fn try_from(row: TicketRow) -> anyhow::Result<Self> {
        let entitlement = match row.coverage {
            None => None,
            Some(coverage) => Some(Entitlement {
                customer: row.customer_id.zip(row.customer_name),
                project: row.project_id.zip(row.project_name),
                asset: row.asset_serial,
                coverage: coverage.parse().map_err(anyhow::Error::msg)?,
                covered_until: row.covered_until,
                reason: row.entitlement_reason.unwrap_or_default(),
            }),
        };
        Ok(Ticket {
            id: row.id,
            number: row.number,
            version: row.version,
            status: row.status.parse().map_err(anyhow::Error::msg)?,
            priority: row.priority.parse().map_err(anyhow::Error::msg)?,
            channel: row.channel.parse().map_err(anyhow::Error::msg)?,
            subject: row.subject,
            contact: row.contact,
            assignee: row.assignee,
            awaiting_since: row.awaiting_since,
            created_at: row.created_at,
            updated_at: row.updated_at,
            entitlement,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ArticleRow {
    id: Uuid,
    ticket_id: Uuid,
    kind: String,
    body: String,
    author: String,
    call_direction: Option<String>,
    call_outcome: Option<String>,
    call_id: Option<String>,
    created_at: DateTime<Utc>,
    html: Option<String>,
}

impl TryFrom<ArticleRow> for Article {
    type Error = anyhow::Error;

    fn try_from(row: ArticleRow) -> anyhow::Result<Self> {
        let kind = match (row.kind.as_str(), row.call_direction, row.call_outcome) {
            ("customer_message", ..) => ArticleKind::CustomerMessage,
            ("agent_reply", ..) => ArticleKind::AgentReply,
            ("internal_note", ..) => ArticleKind::InternalNote,
            ("onsite_arrival", ..) => ArticleKind::OnsiteArrival,
            ("third_party_message", ..) => ArticleKind::ThirdPartyMessage,
            ("call", Some(direction), Some(outcome)) => ArticleKind::Call {
                direction: direction.parse().map_err(anyhow::Error::msg)?,
                outcome: outcome.parse().map_err(anyhow::Error::msg)?,
            },
            (other, ..) => anyhow::bail!("unknown article kind {other:?}"),
        };
        Ok(Article {
            id: row.id,
            ticket_id: row.ticket_id,
            kind,
            body: row.body,
            author: row.author,
            call_id: row.call_id,
            created_at: row.created_at,
            html: row.html,
            attachments: Vec::new(),
        })
    }
}

const ARTICLE_COLUMNS: &str =
    "id, ticket_id, kind, body, author, call_direction, call_outcome, call_id, created_at, html";

const TICKET_COLUMNS: &str = "id, number, version, status, priority, channel, subject, contact, \
     assignee, awaiting_since, created_at, updated_at, customer_id, customer_name, project_id, \
     project_name, asset_serial, coverage, covered_until, entitlement_reason";

fn kind_columns(kind: ArticleKind) -> (&'static str, Option<CallDirection>, Option<CallOutcome>) {
    match kind {
        ArticleKind::CustomerMessage => ("customer_message", None, None),
        ArticleKind::AgentReply => ("agent_reply", None, None),
        ArticleKind::InternalNote => ("internal_note", None, None),
        ArticleKind::OnsiteArrival => ("onsite_arrival", None, None),
        ArticleKind::ThirdPartyMessage => ("third_party_message", None, None),
        ArticleKind::Call { direction, outcome } => ("call", Some(direction), Some(outcome)),
    }
}

pub struct Store {
    pool: PgPool,
    /// Wakes the outbox relay after each commit.
    signal: OutboxSignal,
    /// New tickets without files, to the [`Creator`].
    drafts: mpsc::Sender<Pending>,
}

/// A new ticket on its way to the database: all of it but its number.
struct Draft {
    ticket: Ticket,
    article: Article,
    key: Option<String>,
    /// The first article's files, as `article.attachments` lists them.
    files: Vec<NewAttachment>,
    /// The request's span: its events carry the caller's trace.
    span: tracing::Span,
}

impl Draft {
    /// Keeps the first article's files, if it has any.
    async fn keep_files(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        insert_attachments(
            conn,
            self.article.id,
            &self.article.attachments,
            &self.files,
        )
        .await
    }

    fn events(&self) -> Vec<EventEnvelope> {
        self.span
            .in_scope(|| events::created(&self.ticket, &self.article))
    }
}

/// A draft, and where its writer answers: the draft, numbered, and whether
/// it was inserted (`false`: its key was used before).
type Pending = (Draft, oneshot::Sender<(Draft, sqlx::Result<bool>)>);

/// Most tickets one statement writes.
const MAX_BATCH: usize = 64;

impl Store {
    /// The store, and the [`Creator`] its caller must run.
    pub fn new(pool: PgPool, signal: OutboxSignal) -> (Self, Creator) {
        let (drafts, waiting) = mpsc::channel(1024);
        let creator = Creator {
            pool: pool.clone(),
            waiting: Batches::new(waiting, MAX_BATCH),
        };
        (
            Self {
                pool,
                signal,
                drafts,
            },
            creator,
        )
    }

    /// Opens a ticket, or returns the one opened earlier with the same
    /// idempotency key (`created` false).
    ///
    /// The hot path of the desk. The ticket goes to the [`Creator`], which
    /// writes it with the others waiting at that moment: one statement
    /// writes their tickets, first articles and events (and one per article
    /// its files), so concurrent creates share a commit.
    pub async fn create(
        &self,
        new: NewTicket,
        now: DateTime<Utc>,
    ) -> Result<(Ticket, Article, bool), StoreError> {
        let now = stored_precision(now);
        let state = domain::open(new.first.kind, now);
        let ticket = Ticket {
            id: Uuid::now_v7(),
            number: 0,
            version: 1,
            status: state.status,
            priority: new.priority,
            channel: new.channel,
            subject: new.subject,
            contact: new.contact,
            assignee: None,
            awaiting_since: state.awaiting_since,
            created_at: now,
            updated_at: now,
            entitlement: None,
        };
        let files = new.first.attachments;
        let article = Article {
            id: Uuid::now_v7(),
            ticket_id: ticket.id,
            kind: new.first.kind,
            body: new.first.body,
            author: new.first.author,
            call_id: new.first.call_id,
            created_at: now,
            html: new.first.html,
            attachments: listed(&files),
        };
        let draft = Draft {
            ticket,
            article,
            key: new.idempotency_key,
            files,
            span: tracing::Span::current(),
        };
        let (reply, written) = oneshot::channel();
        let stopping = || anyhow::anyhow!("tickets is shutting down");
        self.drafts
            .send((draft, reply))
            .await
            .map_err(|_| stopping())?;
        let (draft, written) = written.await.map_err(|_| stopping())?;
        let Draft {
            ticket,
            article,
            key,
            ..
        } = draft;
        let inserted = match written {
            Ok(inserted) => inserted,
            // The key names an article added to another ticket: the work was
            // done there, and that ticket is the answer.
            Err(sqlx::Error::Database(error))
                if error.constraint() == Some("articles_idempotency_key") =>
            {
                let mut conn = self.pool.acquire().await?;
                let added = article_by_key(&mut conn, key.as_deref().unwrap_or_default())
                    .await?
                    .context("an article key in use, then gone")?;
                let ticket = lookup(&mut conn, TicketKey::Id(added.ticket_id), false).await?;
                return Ok((ticket, added, false));
            }
            Err(error) => return Err(error.into()),
        };
        if !inserted {
            // The key was used before: that ticket is the answer.
            let row: TicketRow = sqlx::query_as(&format!(
                "SELECT {TICKET_COLUMNS} FROM tickets WHERE idempotency_key = $1"
            ))
            .bind(&key)
            .fetch_one(&self.pool)
            .await?;
            let ticket = Ticket::try_from(row)?;
            let first = self
                .articles(ticket.id)
                .await?
                .into_iter()
                .next()
                .context("a ticket without its first article")?;
            return Ok((ticket, first, false));
        }
        self.signal.committed();
        metrics::counter!("hotline_tickets_opened_total", "channel" => ticket.channel.as_str())
            .increment(1);
        Ok((ticket, article, true))
    }

    pub async fn find(&self, key: TicketKey) -> Result<Ticket, StoreError> {
        let mut conn = self.pool.acquire().await?;
        lookup(&mut conn, key, false).await
    }

    /// The conversation of a ticket, oldest first.
    pub async fn articles(&self, ticket_id: Uuid) -> Result<Vec<Article>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        articles_of(&mut conn, ticket_id).await
    }

    /// A ticket with its conversation, as of one moment: a change that
    /// commits meanwhile is in both or in neither.
    pub async fn conversation(&self, key: TicketKey) -> Result<(Ticket, Vec<Article>), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let ticket = lookup(&mut tx, key, false).await?;
        let articles = articles_of(&mut tx, ticket.id).await?;
        tx.commit().await?;
        Ok((ticket, articles))
    }

    /// One attachment with its content.
    pub async fn attachment(&self, id: Uuid) -> Result<(Attachment, Vec<u8>), StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            attachment: Attachment,
            content: Vec<u8>,
        }
        let row: Row = sqlx::query_as(
            "SELECT id, name, content_type, size, content FROM attachments WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("attachment {id}")))?;
        Ok((row.attachment, row.content))
    }

    /// Newest first; `Some(number)` when there may be more after the page.
    pub async fn list(&self, filter: &Filter) -> Result<(Vec<Ticket>, Option<i64>), StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE true"
        ));
        if !filter.statuses.is_empty() {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            query
                .push(" AND status = ANY(")
                .push_bind(statuses)
                .push(")");
        }
        if filter.awaiting_only {
            query.push(" AND awaiting_since IS NOT NULL");
        }
        if let Some(assignee) = &filter.assignee {
            query.push(" AND assignee = ").push_bind(assignee.clone());
        }
        if let Some(channel) = filter.channel {
            query.push(" AND channel = ").push_bind(channel.as_str());
        }
        if let Some(contact) = &filter.contact {
            query.push(" AND contact = ").push_bind(contact.clone());
        }
        match &filter.customer {
            Some(CustomerFilter::Id(id)) => {
                query.push(" AND customer_id = ").push_bind(*id);
            }
            Some(CustomerFilter::Name(name)) => {
                query
                    .push(" AND lower(customer_name) = lower(")
                    .push_bind(name.clone())
                    .push(")");
            }
            None => {}
        }
        if let Some(text) = &filter.text {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query
                .push(" AND subject ILIKE ")
                .push_bind(format!("%{escaped}%"));
        }
        if let Some(before) = filter.before_number {
            query.push(" AND number < ").push_bind(before);
        }
        query
            .push(" ORDER BY number DESC LIMIT ")
            .push_bind(filter.limit + 1);
        let rows: Vec<TicketRow> = query.build_query_as().fetch_all(&self.pool).await?;
        let mut tickets: Vec<Ticket> = rows
            .into_iter()
            .map(Ticket::try_from)
            .collect::<anyhow::Result<_>>()?;
        let more = usize::try_from(filter.limit).is_ok_and(|limit| tickets.len() > limit);
        if more {
            tickets.pop();
        }
        let next = more.then(|| tickets.last().map(|t| t.number)).flatten();
        Ok((tickets, next))
    }

    /// Applies `command` to a ticket under a row lock, with its events,
    /// at the time the lock is granted.
    pub async fn apply(
        &self,
        key: TicketKey,
        command: Command,
    ) -> Result<(Ticket, Option<Article>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let before = lookup(&mut tx, key, true).await?;
        if let Command::AddArticle { article, .. } = &command
            && let Some(key) = &article.idempotency_key
            && let Some(added) = article_by_key(&mut tx, key).await?
        {
            // Added before — to this ticket or, by a bridge that chose
            // another the first time, to that one: the work is done.
            let on = if added.ticket_id == before.id {
                before
            } else {
                lookup(&mut tx, TicketKey::Id(added.ticket_id), false).await?
            };
            return Ok((on, Some(added)));
        }
        // Read the clock only once the ticket is ours: a command that waited
        // for the lock never records a time before the change it followed.
        let now = stored_precision(Utc::now());
        let state = before.state();
        let mut priority = before.priority;
        let mut new_article = None;
        let change: Change = match command {
            Command::AddArticle {
                mut article,
                pending_customer,
            } => {
                article.kind = article
                    .kind
                    .as_written_by(&article.author, before.contact.as_deref());
                if article.kind == ArticleKind::CustomerMessage && article.author.is_empty() {
                    article.author = before.contact.clone().unwrap_or_else(|| "customer".into());
                }
                let change = domain::add_article(&state, article.kind, pending_customer, now)?;
                new_article = Some(article);
                change
            }
            Command::Assign { assignee, expected } => {
                domain::assign(&state, assignee, expected.as_ref())?
            }
            Command::SetPriority(wanted) => {
                priority = wanted;
                domain::set_priority(&state)?
            }
            Command::Resolve => domain::resolve(&state)?,
            Command::Close => domain::close(&state)?,
            Command::Reopen => domain::reopen(&state)?,
        };
        let row: TicketRow = sqlx::query_as(&format!(
            "UPDATE tickets SET status = $2, priority = $3, assignee = $4, awaiting_since = $5,
                    version = version + 1, updated_at = $6
             WHERE id = $1 RETURNING {TICKET_COLUMNS}"
        ))
        .bind(before.id)
        .bind(change.after.status.as_str())
        .bind(priority.as_str())
        .bind(&change.after.assignee)
        .bind(change.after.awaiting_since)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let after = Ticket::try_from(row)?;
        let article = match new_article {
            Some(mut article) => {
                if article.author.is_empty() {
                    article.author = after.contact.clone().unwrap_or_else(|| "customer".into());
                }
                Some(insert_article(&mut tx, after.id, article, now).await?)
            }
            None => None,
        };
        let events = events::changed(&before, &after, &change, article.as_ref(), now);
        outbox::enqueue(&mut tx, &events).await?;
        tx.commit().await?;
        self.signal.committed();
        if change.responded() {
            tracing::info!(ticket = %after.number, "responded: the clock stops");
        }
        Ok((after, article))
    }
}

/// What `contracts` resolved for one ticket, and when.
pub struct Resolved {
    pub ticket_id: Uuid,
    pub entitlement: Entitlement,
    pub resolved_at: DateTime<Utc>,
    /// The resolution's span: the ticket's `ticket.entitled` carries its trace.
    pub span: tracing::Span,
}

/// Records each resolution on its ticket as a new version, with its
/// `ticket.entitled`, in the caller's transaction and in one statement for
/// all of them. A ticket that already records the same answer, or one
/// resolved later, is left as it is (no version, no event); of two
/// resolutions of one ticket, the later counts. Returns the tickets changed.
pub async fn entitle(
    conn: &mut PgConnection,
    resolved: &[Resolved],
) -> Result<Vec<Ticket>, StoreError> {
    let mut latest: Vec<&Resolved> = Vec::with_capacity(resolved.len());
    for one in resolved {
        match latest.iter_mut().find(|r| r.ticket_id == one.ticket_id) {
            Some(kept) if kept.resolved_at <= one.resolved_at => *kept = one,
            Some(_) => {}
            None => latest.push(one),
        }
    }
    if latest.is_empty() {
        return Ok(Vec::new());
    }
    let now = stored_precision(Utc::now());
    let entitlements: Vec<&Entitlement> = latest.iter().map(|r| &r.entitlement).collect();
    let rows: Vec<TicketRow> = sqlx::query_as(&format!(
        "UPDATE tickets SET customer_id = r.r_customer_id, customer_name = r.r_customer_name,
                project_id = r.r_project_id, project_name = r.r_project_name,
                asset_serial = r.r_asset, coverage = r.r_coverage,
                covered_until = r.r_covered_until, entitlement_reason = r.r_reason,
                entitled_at = r.r_at, version = version + 1, updated_at = $11
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                     $7::text[], $8::date[], $9::text[], $10::timestamptz[])
             AS r(r_ticket, r_customer_id, r_customer_name, r_project_id, r_project_name,
                  r_asset, r_coverage, r_covered_until, r_reason, r_at)
         WHERE id = r.r_ticket
           AND (entitled_at IS NULL OR entitled_at <= r.r_at)
           AND (customer_id, customer_name, project_id, project_name, asset_serial, coverage,
                covered_until, entitlement_reason)
               IS DISTINCT FROM (r.r_customer_id, r.r_customer_name, r.r_project_id,
                r.r_project_name, r.r_asset, r.r_coverage, r.r_covered_until, r.r_reason)
         RETURNING {TICKET_COLUMNS}"
    ))
    // Planned for each batch: a plan kept from when the table was small
    // joins by scanning every ticket (measured: the fleet at half speed
    // after 20,000 tickets, with autovacuum off).
    .persistent(false)
    .bind(column(&latest, |r| r.ticket_id))
    .bind(column(&entitlements, |e| e.customer.as_ref().map(|c| c.0)))
    .bind(column(&entitlements, |e| {
        e.customer.as_ref().map(|c| c.1.as_str())
    }))
    .bind(column(&entitlements, |e| e.project.as_ref().map(|p| p.0)))
    .bind(column(&entitlements, |e| {
        e.project.as_ref().map(|p| p.1.as_str())
    }))
    .bind(column(&entitlements, |e| e.asset.as_deref()))
    .bind(column(&entitlements, |e| e.coverage.as_str()))
    .bind(column(&entitlements, |e| e.covered_until))
    .bind(column(&entitlements, |e| e.reason.as_str()))
    .bind(column(&latest, |r| r.resolved_at))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let changed = rows
        .into_iter()
        .map(Ticket::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let events: Vec<EventEnvelope> = changed
        .iter()
        .map(|ticket| {
            let span = latest
                .iter()
                .find(|r| r.ticket_id == ticket.id)
                .map(|r| r.span.clone())
                .unwrap_or_else(tracing::Span::current);
            span.in_scope(|| events::entitled(ticket, now))
        })
        .collect();
    outbox::enqueue(conn, &events).await?;
    Ok(changed)
}

/// Writes new tickets in batches: whatever is waiting when the writer is
/// free goes in one statement, so under load many creates share one commit
/// and alone a create costs what it did on its own. One writer: measured,
/// two writing at once made smaller batches and fewer tickets per second.
pub struct Creator {
    pool: PgPool,
    waiting: Batches<Pending>,
}

impl Creator {
    /// Writes until `cancel`; then writes what is already waiting, so no
    /// accepted request is dropped.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut numbers = Numbers::default();
        while let Some(batch) = self.waiting.next(&cancel).await {
            write(&self.pool, batch, &mut numbers).await;
        }
        Ok(())
    }
}

/// Writes `batch` and answers each of its drafts. A batch that fails as a
/// whole (one key naming another ticket's article, the database going away)
/// is written again one by one, so each draft gets its own answer.
async fn write(pool: &PgPool, batch: Vec<Pending>, numbers: &mut Numbers) {
    let (mut drafts, replies): (Vec<Draft>, Vec<_>) = batch.into_iter().unzip();
    let written = match pool.acquire().await {
        Err(error) => Err(error),
        Ok(mut conn) if drafts.iter().all(|d| d.files.is_empty()) => {
            insert_many(&mut conn, &mut drafts, numbers).await
        }
        Ok(mut conn) => with_files(&mut conn, &mut drafts, numbers).await,
    };
    match written {
        Ok(inserted) => {
            for ((draft, reply), inserted) in drafts.into_iter().zip(replies).zip(inserted) {
                // A caller that went away needs no answer.
                let _ = reply.send((draft, Ok(inserted)));
            }
        }
        Err(error) if drafts.len() == 1 => {
            if let Some((draft, reply)) = drafts.into_iter().zip(replies).next() {
                let _ = reply.send((draft, Err(error)));
            }
        }
        // The database refused the statement (a key naming another ticket's
        // article, a check): nothing was written; each alone gets its answer.
        Err(sqlx::Error::Database(error)) => {
            tracing::debug!(%error, tickets = drafts.len(), "batch refused; writing one by one");
            for (mut draft, reply) in drafts.into_iter().zip(replies) {
                // Alone, with numbers of its own.
                let alone = std::slice::from_mut(&mut draft);
                let written = match pool.acquire().await {
                    Ok(mut conn) => with_files(&mut conn, alone, &mut Numbers::default())
                        .await
                        .map(|inserted| inserted.first().copied().unwrap_or(false)),
                    Err(error) => Err(error),
                };
                let _ = reply.send((draft, written));
            }
        }
        // The database away, or the commit's fate unknown: writing them
        // again one by one would wait once per ticket, or write twice. Every
        // caller hears of it, and retries with its key.
        Err(error) => {
            for (draft, reply) in drafts.into_iter().zip(replies) {
                let _ = reply.send((draft, Err(same_kind(&error))));
            }
        }
    }
}

/// An error for one more caller, of the same kind as `error`: passing
/// trouble stays passing trouble.
fn same_kind(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// [`insert_many`] in a transaction that also keeps the files of each
/// ticket inserted: for a batch some of whose drafts have files, and for a
/// draft written alone after its batch was refused.
async fn with_files(
    conn: &mut PgConnection,
    drafts: &mut [Draft],
    numbers: &mut Numbers,
) -> sqlx::Result<Vec<bool>> {
    let mut tx = conn.begin().await?;
    let inserted = insert_many(&mut tx, drafts, numbers).await?;
    for (draft, inserted) in drafts.iter().zip(&inserted) {
        if *inserted {
            draft.keep_files(&mut tx).await?;
        }
    }
    tx.commit().await?;
    Ok(inserted)
}

/// The kind columns of a first article, as [`insert_many`] binds them.
fn article_columns(
    article: &Article,
) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    let (kind, direction, outcome) = kind_columns(article.kind);
    (
        kind,
        direction.map(CallDirection::as_str),
        outcome.map(CallOutcome::as_str),
    )
}

fn outbox_rows(events: &[EventEnvelope]) -> sqlx::Result<OutboxRows> {
    OutboxRows::new(events).map_err(|error| sqlx::Error::Encode(error.into()))
}

/// Ticket numbers a writer drew ahead, with the batch before, so that under
/// load a batch costs one round trip. Drawn only while creates queue up,
/// and used only within [`Numbers::FRESH`] of being drawn, so that a number
/// is never much older than its ticket; when a burst ends, the few left
/// over are dropped (a gap in the numbers, as a failed create leaves).
#[derive(Default)]
struct Numbers {
    /// Each with when it was drawn, oldest first.
    ahead: std::collections::VecDeque<(i64, std::time::Instant)>,
}

impl Numbers {
    const FRESH: std::time::Duration = std::time::Duration::from_millis(100);

    /// Up to `count` numbers drawn ahead, oldest first; stale ones dropped.
    fn take(&mut self, count: usize) -> Vec<i64> {
        self.ahead
            .retain(|(_, drawn)| drawn.elapsed() <= Self::FRESH);
        let count = count.min(self.ahead.len());
        self.ahead
            .drain(..count)
            .map(|(number, _)| number)
            .collect()
    }
}

/// Numbers and writes tickets, their first articles and their events in one
/// statement, which skips a ticket whose key was used before; says for each
/// draft whether it was inserted. Under load the same statement draws the
/// next batch's numbers.
async fn insert_many(
    conn: &mut PgConnection,
    drafts: &mut [Draft],
    numbers: &mut Numbers,
) -> sqlx::Result<Vec<bool>> {
    let mut drawn = numbers.take(drafts.len());
    if drawn.len() < drafts.len() {
        let missing = i64::try_from(drafts.len() - drawn.len()).unwrap_or(i64::MAX);
        let more: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('ticket_numbers') FROM generate_series(1, $1)")
                .bind(missing)
                .fetch_all(&mut *conn)
                .await?;
        drawn.extend(more);
    }
    // Creates queueing up: draw as many again for the next batch.
    let ahead = if drafts.len() > 1 { drafts.len() } else { 0 };
    for (draft, number) in drafts.iter_mut().zip(drawn) {
        draft.ticket.number = number;
    }
    let mut events = Vec::new();
    let mut owners = Vec::new();
    for draft in drafts.iter() {
        for event in draft.events() {
            owners.push(draft.ticket.id);
            events.push(event);
        }
    }
    let events = outbox_rows(&events)?;
    let columns: Vec<_> = drafts.iter().map(|d| article_columns(&d.article)).collect();
    let sql = format!(
        "WITH input AS (
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::timestamptz[],
                 $11::uuid[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                 $17::text[], $18::text[])
             AS i(id, number, status, priority, channel, subject, contact, awaiting_since, key,
                  created_at, article_id, kind, body, author, call_direction, call_outcome,
                  call_id, html)
         ), ticket AS (
             INSERT INTO tickets (id, number, status, priority, channel, subject, contact,
                                  awaiting_since, idempotency_key, created_at, updated_at)
             SELECT id, number, status, priority, channel, subject, contact, awaiting_since,
                 key, created_at, created_at
             FROM input ORDER BY number
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id
         ), article AS (
             INSERT INTO articles (id, ticket_id, kind, body, author, call_direction,
                                   call_outcome, call_id, created_at, idempotency_key, html)
             SELECT i.article_id, i.id, i.kind, i.body, i.author, i.call_direction,
                 i.call_outcome, i.call_id, i.created_at, i.key, i.html
             FROM input i JOIN ticket USING (id)
         ), events AS ({}
         ), ahead AS (
             SELECT nextval('ticket_numbers') AS number FROM generate_series(1, $25)
         )
         SELECT id, NULL::bigint AS number FROM ticket
         UNION ALL SELECT NULL, number FROM ahead",
        OutboxRows::insert_sql(19, Some("(($24::uuid[])[ord]) IN (SELECT id FROM ticket)"))
    );
    let query = sqlx::query(&sql)
        .bind(column(drafts, |d| d.ticket.id))
        .bind(column(drafts, |d| d.ticket.number))
        .bind(column(drafts, |d| d.ticket.status.as_str()))
        .bind(column(drafts, |d| d.ticket.priority.as_str()))
        .bind(column(drafts, |d| d.ticket.channel.as_str()))
        .bind(column(drafts, |d| d.ticket.subject.as_str()))
        .bind(column(drafts, |d| d.ticket.contact.as_deref()))
        .bind(column(drafts, |d| d.ticket.awaiting_since))
        .bind(column(drafts, |d| d.key.as_deref()))
        .bind(column(drafts, |d| d.ticket.created_at))
        .bind(column(drafts, |d| d.article.id))
        .bind(column(&columns, |c| c.0))
        .bind(column(drafts, |d| d.article.body.as_str()))
        .bind(column(drafts, |d| d.article.author.as_str()))
        .bind(column(&columns, |c| c.1))
        .bind(column(&columns, |c| c.2))
        .bind(column(drafts, |d| d.article.call_id.as_deref()))
        .bind(column(drafts, |d| d.article.html.as_deref()));
    let drawing = std::time::Instant::now();
    let rows = events
        .bind(query)
        .bind(owners)
        .bind(i64::try_from(ahead).unwrap_or(0))
        .fetch_all(conn)
        .await?;
    let mut inserted = Vec::with_capacity(drafts.len());
    for row in rows {
        match (row.try_get(0)?, row.try_get(1)?) {
            (Some(id), _) => inserted.push(id),
            (None, Some(number)) => numbers.ahead.push_back((number, drawing)),
            (None, None) => {}
        }
    }
    Ok(drafts
        .iter()
        .map(|d| inserted.contains(&d.ticket.id))
        .collect())
}

/// PostgreSQL keeps microseconds: what we return must equal what we read back.
fn stored_precision(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// Finds a ticket by id or number, optionally locking it for a change.
async fn lookup(conn: &mut PgConnection, key: TicketKey, lock: bool) -> Result<Ticket, StoreError> {
    let (id, number, shown) = match key {
        TicketKey::Id(id) => (Some(id), None, id.to_string()),
        TicketKey::Number(number) => (None, Some(number), domain::format_number(number)),
    };
    let row: Option<TicketRow> = sqlx::query_as(&format!(
        "SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1 OR number = $2 {}",
        if lock { "FOR UPDATE" } else { "" }
    ))
    .bind(id)
    .bind(number)
    .fetch_optional(conn)
    .await?;
    Ok(Ticket::try_from(row.ok_or(StoreError::NotFound(shown))?)?)
}

/// The article added with idempotency key `key`, if any.
async fn article_by_key(conn: &mut PgConnection, key: &str) -> Result<Option<Article>, StoreError> {
    let row: Option<ArticleRow> = sqlx::query_as(&format!(
        "SELECT {ARTICLE_COLUMNS} FROM articles WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(with_attachments(conn, row.into_iter().collect())
        .await?
        .pop())
}

async fn articles_of(conn: &mut PgConnection, ticket_id: Uuid) -> Result<Vec<Article>, StoreError> {
    let rows: Vec<ArticleRow> = sqlx::query_as(&format!(
        "SELECT {ARTICLE_COLUMNS} FROM articles WHERE ticket_id = $1 ORDER BY created_at, id"
    ))
    .bind(ticket_id)
    .fetch_all(&mut *conn)
    .await?;
    with_attachments(conn, rows).await
}

/// Articles read from `rows`, each with the list of its files.
async fn with_attachments(
    conn: &mut PgConnection,
    rows: Vec<ArticleRow>,
) -> Result<Vec<Article>, StoreError> {
    let mut articles = rows
        .into_iter()
        .map(Article::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ids: Vec<Uuid> = articles.iter().map(|a| a.id).collect();
    if ids.is_empty() {
        return Ok(articles);
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        article_id: Uuid,
        #[sqlx(flatten)]
        attachment: Attachment,
    }
    let files: Vec<Row> = sqlx::query_as(
        "SELECT article_id, id, name, content_type, size FROM attachments
         WHERE article_id = ANY($1) ORDER BY article_id, position",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    for file in files {
        if let Some(article) = articles.iter_mut().find(|a| a.id == file.article_id) {
            article.attachments.push(file.attachment);
        }
    }
    Ok(articles)
}

/// How `files` are listed once kept, each with its new id.
fn listed(files: &[NewAttachment]) -> Vec<Attachment> {
    files
        .iter()
        .map(|file| Attachment {
            id: Uuid::now_v7(),
            name: file.name.clone(),
            content_type: file.content_type.clone(),
            size: i64::try_from(file.content.len()).unwrap_or(i64::MAX),
        })
        .collect()
}

/// Keeps `files` with article `article_id`, in order, as `kept` lists them.
async fn insert_attachments(
    conn: &mut PgConnection,
    article_id: Uuid,
    kept: &[Attachment],
    files: &[NewAttachment],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = kept.iter().map(|a| a.id).collect();
    let names: Vec<String> = kept.iter().map(|a| a.name.clone()).collect();
    let types: Vec<String> = kept.iter().map(|a| a.content_type.clone()).collect();
    let contents: Vec<&[u8]> = files.iter().map(|f| f.content.as_slice()).collect();
    sqlx::query(
        "INSERT INTO attachments (id, article_id, position, name, content_type, size, content)
         SELECT f.id, $1, f.position, f.name, f.content_type, length(f.content), f.content
         FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[])
              WITH ORDINALITY AS f (id, name, content_type, content, position)",
    )
    .bind(article_id)
    .bind(&ids)
    .bind(&names)
    .bind(&types)
    .bind(&contents)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_article(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    article: NewArticle,
    now: DateTime<Utc>,
) -> Result<Article, StoreError> {
    let id = Uuid::now_v7();
    let (kind, direction, outcome) = kind_columns(article.kind);
    sqlx::query(
        "INSERT INTO articles (id, ticket_id, kind, body, author, call_direction, call_outcome,
             call_id, created_at, idempotency_key, html)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(ticket_id)
    .bind(kind)
    .bind(&article.body)
    .bind(&article.author)
    .bind(direction.map(CallDirection::as_str))
    .bind(outcome.map(CallOutcome::as_str))
    .bind(&article.call_id)
    .bind(now)
    .bind(&article.idempotency_key)
    .bind(&article.html)
    .execute(&mut *conn)
    .await?;
    let attachments = listed(&article.attachments);
    insert_attachments(conn, id, &attachments, &article.attachments).await?;
    Ok(Article {
        id,
        ticket_id,
        kind: article.kind,
        body: article.body,
        author: article.author,
        call_id: article.call_id,
        created_at: now,
        html: article.html,
        attachments,
    })
}
