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
/// How long one call may take on the server before it is cancelled.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent calls one client connection may have in flight.
pub const CONCURRENCY_PER_CONNECTION: usize = 256;

/// A lazily connecting channel with connect and request timeouts.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid gRPC endpoint {url:?}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .tcp_nodelay(true)
        .connect_lazy())
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
