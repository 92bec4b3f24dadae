//! `hotline.tickets.v1.TicketService`: maps gRPC requests to store commands
//! and refusals to gRPC statuses, and checks each caller's role.

use std::sync::Arc;

use chrono::Utc;
use hotline_kit::grpc::store_failed;
use hotline_kit::{
    auth::{Caller, Role, authorize},
    input::{field, line, refuse_nul},
};
use hotline_proto::tickets::v1::{self as pb, ticket_service_server::TicketService};
use tonic::{Request, Response, Status};

use crate::{
    convert,
    domain::{self, ArticleKind, Channel, Priority, Refusal, TicketKey},
    store::{
        Command, CustomerFilter, Filter, NewArticle, NewAttachment, NewTicket, Store, StoreError,
    },
};

/// Roles that read tickets: everyone at the desk and the bridges.
const READERS: &[Role] = &[
    Role::Agent,
    Role::Dispatcher,
    Role::Technician,
    Role::Manager,
    Role::Bridge,
];
/// Roles that open tickets and add to them.
const WRITERS: &[Role] = READERS;
/// Roles that work tickets: assign, prioritise, reopen, close.
const WORKERS: &[Role] = &[Role::Agent, Role::Dispatcher, Role::Manager];
/// Roles that resolve: the workers, and technicians who fixed it on site.
const RESOLVERS: &[Role] = &[
    Role::Agent,
    Role::Dispatcher,
    Role::Manager,
    Role::Technician,
];

const MAX_SUBJECT_CHARS: usize = 500;
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_FIELD_CHARS: usize = 320;
const MAX_HTML_BYTES: usize = 2 * 1024 * 1024;
const MAX_ATTACHMENTS: usize = 20;
const MAX_FILE_NAME_CHARS: usize = 255;
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

pub struct TicketApi {
    store: Arc<Store>,
}

impl TicketApi {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Applies `command` to the named ticket and answers with the result.
    async fn run(
        &self,
        ticket: &str,
        command: Command,
    ) -> Result<Response<pb::TicketResponse>, Status> {
        let key = parse_key(ticket)?;
        let (ticket, _) = self.store.apply(key, command).await.map_err(status)?;
        Ok(Response::new(pb::TicketResponse {
            ticket: Some(convert::ticket(&ticket)),
        }))
    }
}

fn status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound(_) => Status::not_found(error.to_string()),
        StoreError::Refused(Refusal::Transition(why)) => Status::failed_precondition(why),
        StoreError::Refused(Refusal::Invalid(why)) => Status::invalid_argument(why),
        StoreError::Database(error) => store_failed("the ticket store", &error),
    }
}

fn invalid(refusal: Refusal) -> Status {
    Status::invalid_argument(refusal.to_string())
}

fn parse_key(text: &str) -> Result<TicketKey, Status> {
    if text.trim().is_empty() {
        return Err(Status::invalid_argument(
            "name the ticket: a number such as HL-10001 or an id",
        ));
    }
    text.parse().map_err(invalid)
}

fn body(value: String) -> Result<String, Status> {
    refuse_nul(&value, "the body")?;
    if value.len() > MAX_BODY_BYTES {
        return Err(Status::invalid_argument(format!(
            "the body is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(value)
}

/// The HTML version of a body, sanitised (ammonia): no scripts, styles,
/// event handlers or forms, and no images, so that showing it fetches
/// nothing from the sender (tracking pixels). `None` when empty.
fn html(value: String) -> Result<Option<String>, Status> {
    if value.len() > MAX_HTML_BYTES {
        return Err(Status::invalid_argument(format!(
            "the HTML is larger than {MAX_HTML_BYTES} bytes"
        )));
    }
    if value.trim().is_empty() {
        return Ok(None);
    }
    let clean = ammonia::Builder::default()
        .rm_tags(["img"])
        .clean(&value.replace('\0', ""))
        .to_string();
    Ok(Some(clean))
}

/// Files for a new article: at most [`MAX_ATTACHMENTS`], each named by
/// its file name alone (no folders, no control characters), with a media
/// type of the form `type/subtype` (anything else is kept as
/// `application/octet-stream`: a sender's odd header never loses a file).
fn attachments(files: Vec<pb::NewAttachment>) -> Result<Vec<NewAttachment>, Status> {
    if files.len() > MAX_ATTACHMENTS {
        return Err(Status::invalid_argument(format!(
            "an article takes at most {MAX_ATTACHMENTS} attachments, not {}",
            files.len()
        )));
    }
    Ok(files
        .into_iter()
        .map(|file| {
            let base = file
                .name
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_FILE_NAME_CHARS)
                .collect::<String>();
            let name = match base.trim() {
                "" | "." | ".." => "attachment".to_owned(),
                trimmed => trimmed.to_owned(),
            };
            let given = file.content_type.trim();
            let valid = given.len() <= MAX_FILE_NAME_CHARS
                && given.split_once('/').is_some_and(|(kind, sub)| {
                    !kind.is_empty() && !sub.is_empty() && !sub.contains('/')
                })
                && given
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\'));
            NewAttachment {
                name,
                content_type: if valid {
                    given.to_ascii_lowercase()
                } else {
                    "application/octet-stream".to_owned()
                },
                content: file.content,
            }
        })
        .collect())
}

/// Customer contacts are authored by the customer; everything else by the caller.
fn author(kind: ArticleKind, given: &str, caller: &Caller) -> Result<String, Status> {
    Ok(match kind {
        ArticleKind::CustomerMessage | ArticleKind::ThirdPartyMessage => {
            field(given, "author", MAX_FIELD_CHARS)?.unwrap_or_default()
        }
        _ => caller.subject.clone(),
    })
}

#[tonic::async_trait]
impl TicketService for TicketApi {
    async fn create_ticket(
        &self,
        request: Request<pb::CreateTicketRequest>,
    ) -> Result<Response<pb::CreateTicketResponse>, Status> {
        let caller = authorize(&request, WRITERS)?;
        let request = request.into_inner();
        let subject = field(&request.subject, "subject", MAX_SUBJECT_CHARS)?
            .ok_or_else(|| Status::invalid_argument("a ticket needs a subject"))?;
        let kind = convert::article_kind_from(request.first_article, request.call.as_ref())
            .map_err(invalid)?
            .unwrap_or(ArticleKind::CustomerMessage);
        let contact = field(&request.contact, "contact", MAX_FIELD_CHARS)?;
        let first_author = match kind {
            ArticleKind::CustomerMessage => contact.clone().unwrap_or_else(|| "customer".into()),
            _ => author(kind, "", &caller)?,
        };
        domain::check_body(kind, &request.body).map_err(invalid)?;
        let new = NewTicket {
            subject,
            contact,
            priority: convert::priority_from(request.priority)
                .map_err(invalid)?
                .unwrap_or(Priority::Normal),
            channel: convert::channel_from(request.channel)
                .map_err(invalid)?
                .unwrap_or(Channel::Api),
            idempotency_key: field(&request.idempotency_key, "idempotency_key", 200)?,
            first: NewArticle {
                kind,
                body: body(request.body)?,
                author: first_author,
                call_id: request
                    .call
                    .as_ref()
                    .and_then(|c| (!c.call_id.is_empty()).then(|| c.call_id.clone())),
                idempotency_key: None,
                html: html(request.html)?,
                attachments: attachments(request.attachments)?,
            },
        };
        let (ticket, _, created) = self.store.create(new, Utc::now()).await.map_err(status)?;
        if created {
            tracing::info!(
                ticket = %ticket.number,
                channel = ticket.channel.as_str(),
                "ticket opened"
            );
        }
        Ok(Response::new(pb::CreateTicketResponse {
            ticket: Some(convert::ticket(&ticket)),
            created,
        }))
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        authorize(&request, READERS)?;
        let key = parse_key(&request.get_ref().ticket)?;
        let (ticket, articles) = self.store.conversation(key).await.map_err(status)?;
        Ok(Response::new(pb::GetTicketResponse {
            ticket: Some(convert::ticket(&ticket)),
            articles: articles.iter().map(convert::article).collect(),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        authorize(&request, READERS)?;
        let request = request.into_inner();
        let statuses = request
            .status
            .iter()
            .filter_map(|s| convert::status_from(*s).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before_number = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().map_err(|_| {
                Status::invalid_argument("page_token is not one this service gave")
            })?),
        };
        let filter = Filter {
            statuses,
            awaiting_only: request.awaiting_response,
            assignee: field(&request.assignee, "assignee", MAX_FIELD_CHARS)?,
            channel: convert::channel_from(request.channel).map_err(invalid)?,
            contact: field(&request.contact, "contact", MAX_FIELD_CHARS)?,
            customer: line(&request.customer, "customer", MAX_FIELD_CHARS)?.map(|customer| {
                match uuid::Uuid::parse_str(&customer) {
                    Ok(id) => CustomerFilter::Id(id),
                    Err(_) => CustomerFilter::Name(customer),
                }
            }),
            text: field(&request.text, "text", MAX_SUBJECT_CHARS)?,
            before_number,
            limit: i64::from(page_size),
        };
        let (tickets, next) = self.store.list(&filter).await.map_err(status)?;
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: tickets.iter().map(convert::ticket).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn add_article(
        &self,
        request: Request<pb::AddArticleRequest>,
    ) -> Result<Response<pb::AddArticleResponse>, Status> {
        let caller = authorize(&request, WRITERS)?;
        let request = request.into_inner();
        let key = parse_key(&request.ticket)?;
        let kind = convert::article_kind_from(request.kind, request.call.as_ref())
            .map_err(invalid)?
            .ok_or_else(|| Status::invalid_argument("an article needs its kind"))?;
        domain::check_body(kind, &request.body).map_err(invalid)?;
        let article = NewArticle {
            kind,
            author: author(kind, &request.author, &caller)?,
            body: body(request.body)?,
            call_id: request
                .call
                .as_ref()
                .and_then(|c| (!c.call_id.is_empty()).then(|| c.call_id.clone())),
            idempotency_key: field(&request.idempotency_key, "idempotency_key", 200)?,
            html: html(request.html)?,
            attachments: attachments(request.attachments)?,
        };
        let command = Command::AddArticle {
            article,
            pending_customer: request.pending_customer,
        };
        let (ticket, article) = self.store.apply(key, command).await.map_err(status)?;
        Ok(Response::new(pb::AddArticleResponse {
            ticket: Some(convert::ticket(&ticket)),
            article: article.as_ref().map(convert::article),
        }))
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::GetAttachmentResponse>, Status> {
        authorize(&request, READERS)?;
        let id = request
            .get_ref()
            .id
            .trim()
            .parse()
            .map_err(|_| Status::invalid_argument("an attachment id is a UUID"))?;
        let (attachment, content) = self.store.attachment(id).await.map_err(status)?;
        Ok(Response::new(pb::GetAttachmentResponse {
            attachment: Some(convert::attachment(&attachment)),
            content,
        }))
    }

    async fn assign_ticket(
        &self,
        request: Request<pb::AssignTicketRequest>,
    ) -> Result<Response<pb::TicketResponse>, Status> {
        authorize(&request, WORKERS)?;
        let assignee = field(&request.get_ref().assignee, "assignee", MAX_FIELD_CHARS)?;
        let expected = request
            .get_ref()
            .expected_assignee
            .as_deref()
            .map(|e| field(e, "expected_assignee", MAX_FIELD_CHARS))
            .transpose()?;
        self.run(
            &request.get_ref().ticket,
            Command::Assign { assignee, expected },
        )
        .await
    }

    async fn set_priority(
        &self,
        request: Request<pb::SetPriorityRequest>,
    ) -> Result<Response<pb::TicketResponse>, Status> {
        authorize(&request, WORKERS)?;
        let priority = convert::priority_from(request.get_ref().priority)
            .map_err(invalid)?
            .ok_or_else(|| {
                Status::invalid_argument("name the priority: low, normal, high or urgent")
            })?;
        self.run(&request.get_ref().ticket, Command::SetPriority(priority))
            .await
    }

    async fn resolve_ticket(
        &self,
        request: Request<pb::TicketRef>,
    ) -> Result<Response<pb::TicketResponse>, Status> {
        authorize(&request, RESOLVERS)?;
        self.run(&request.get_ref().ticket, Command::Resolve).await
    }

    async fn close_ticket(
        &self,
        request: Request<pb::TicketRef>,
    ) -> Result<Response<pb::TicketResponse>, Status> {
        authorize(&request, WORKERS)?;
        self.run(&request.get_ref().ticket, Command::Close).await
    }

    async fn reopen_ticket(
        &self,
        request: Request<pb::TicketRef>,
    ) -> Result<Response<pb::TicketResponse>, Status> {
        authorize(&request, WORKERS)?;
        self.run(&request.get_ref().ticket, Command::Reopen).await
    }
}
