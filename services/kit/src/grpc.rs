//! gRPC plumbing shared by every service and client: the server's limits,
//! and clients that carry a bearer token and the trace context.

use std::time::Duration;

use anyhow::Context;
use tonic::{
    metadata::AsciiMetadataValue,
    service::Interceptor,
    transport::{Channel, Endpoint},
};

/// Largest request or response any Hotline service accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
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
