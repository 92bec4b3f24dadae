//! gRPC plumbing shared by every service and client: the server's limits,
//! and clients that carry a bearer token and the trace context.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::auth::{Authority, Role};
use tonic::{
    metadata::AsciiMetadataValue,
    service::Interceptor,
    transport::{Channel, Endpoint},
};

/// Largest request or response any Hotline service accepts: a whole
/// mail's attachments (25 MB at most) fit in one call.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// How long one call may take on the server before it is cancelled,
/// unless its module declared a longer limit for it ([`Deadlines`]).
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client waits for an answer by default.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Concurrent calls one client connection may have in flight.
pub const CONCURRENCY_PER_CONNECTION: usize = 256;

/// A lazily connecting channel with connect and request timeouts.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    channel_waiting(url, CLIENT_TIMEOUT)
}

/// [`channel`] for calls that may take up to `timeout` (a large upload).
pub fn channel_waiting(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid gRPC endpoint {url:?}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// The server's limit on each call: [`SERVER_TIMEOUT`], or the longer one
/// a module declared for a method (an import streaming a large file).
/// tonic's own server timeout is one value for every method, so this layer
/// replaces it; a shorter deadline the client sends (`grpc-timeout`) still
/// applies.
#[derive(Clone, Default)]
pub struct Deadlines {
    /// Method paths (`/package.Service/Method`) and their limits.
    longer: Arc<Vec<(&'static str, Duration)>>,
}

impl Deadlines {
    pub fn new(longer: Vec<(&'static str, Duration)>) -> Self {
        Self {
            longer: Arc::new(longer),
        }
    }

    /// The limit of a call to `path`.
    pub fn limit(&self, path: &str) -> Duration {
        self.longer
            .iter()
            .find(|(method, _)| *method == path)
            .map_or(SERVER_TIMEOUT, |(_, limit)| *limit)
    }
}

impl<S> tower::Layer<S> for Deadlines {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            deadlines: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    deadlines: Deadlines,
}

impl<S, B> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = self.deadlines.limit(request.uri().path());
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(answer) => answer,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the server stops a call after {}s; nothing more was done",
                    limit.as_secs()
                ))
                .into_http()),
            }
        })
    }
}

/// Adds `authorization: Bearer <token>` and the trace context to every call.
#[derive(Clone)]
pub struct BearerToken {
    header: AsciiMetadataValue,
}

impl BearerToken {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let header = format!("Bearer {}", token.trim())
            .parse()
            .context("the token has characters a header cannot carry")?;
        Ok(Self { header })
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        crate::telemetry::inject_grpc(request.metadata_mut());
        Ok(request)
    }
}

/// How a module calls another service as itself: every call carries a
/// freshly signed, short-lived token for `subject` with `roles`.
#[derive(Clone)]
pub struct ServiceToken {
    authority: Arc<Authority>,
    subject: &'static str,
    roles: &'static [Role],
}

impl ServiceToken {
    pub fn new(authority: Arc<Authority>, subject: &'static str, roles: &'static [Role]) -> Self {
        Self {
            authority,
            subject,
            roles,
        }
    }
}

impl Interceptor for ServiceToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let token = self.authority.issue(
            self.subject,
            self.roles,
            chrono::Utc::now(),
            chrono::Duration::minutes(5),
        );
        BearerToken::new(&token)
            .map_err(|_| tonic::Status::internal("cannot sign a service token"))?
            .call(request)
    }
}

/// A store's failure as its caller sees it, logged with its whole chain:
/// `UNAVAILABLE` (retry shortly) while the database cannot be reached,
/// else `INTERNAL`. `store` names it for the caller ("the directory").
pub fn store_failed(store: &str, error: &anyhow::Error) -> tonic::Status {
    tracing::error!(store, error = format!("{error:#}"), "store failed");
    let transient = error.chain().any(|cause| {
        cause.downcast_ref::<sqlx::Error>().is_some_and(|e| {
            matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        })
    });
    if transient {
        tonic::Status::unavailable(format!("{store} is unavailable; retry shortly"))
    } else {
        tonic::Status::internal(format!("{store} failed; nothing was changed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_method_gets_its_own_limit_and_the_rest_the_default() {
        let deadlines = Deadlines::new(vec![("/a.v1.S/Import", Duration::from_secs(600))]);
        assert_eq!(deadlines.limit("/a.v1.S/Import"), Duration::from_secs(600));
        assert_eq!(deadlines.limit("/a.v1.S/Get"), SERVER_TIMEOUT);
        assert_eq!(Deadlines::default().limit("/a.v1.S/Import"), SERVER_TIMEOUT);
    }
}
