//! Bearer tokens with roles.
//!
//! A token is a JWT (`HS256`) signed with the configured secret, carrying
//! the caller's subject, roles and expiry. The gRPC server's [`Authenticate`]
//! layer verifies it on every call except health and reflection and puts the
//! [`Caller`] into the request; each method then names the roles it admits
//! with [`authorize`].

use std::{
    fmt,
    str::FromStr,
    sync::Arc,
    task::{Context, Poll},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Secret;

/// What a caller may do. `Admin` is admitted everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers customers: works tickets.
    Agent,
    /// Routes work: assigns tickets and technicians.
    Dispatcher,
    /// Works on site: records arrivals and notes.
    Technician,
    /// Oversees the desk: everything an agent and a dispatcher do.
    Manager,
    /// Runs the system: everything.
    Admin,
    /// A machine peer (email and phone bridges, other services).
    Bridge,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Agent,
        Role::Dispatcher,
        Role::Technician,
        Role::Manager,
        Role::Admin,
        Role::Bridge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Dispatcher => "dispatcher",
            Role::Technician => "technician",
            Role::Manager => "manager",
            Role::Admin => "admin",
            Role::Bridge => "bridge",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role {text:?} (one of {})", names.join(", "))
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated party behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who: an agent's login, a bridge's name. Recorded as article author.
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has_any(&self, allowed: &[Role]) -> bool {
        self.roles
            .iter()
            .any(|role| *role == Role::Admin || allowed.contains(role))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("bearer token signature does not verify")]
    BadSignature,
    #[error("bearer token expired at {0}")]
    Expired(DateTime<Utc>),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    roles: Vec<Role>,
    iat: i64,
    exp: i64,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Issues and verifies tokens with one secret.
#[derive(Clone)]
pub struct Authority {
    secret: Secret,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authority([redacted])")
    }
}

/// Shorter secrets are refused: a guessable key forges every role.
pub const MIN_SECRET_LEN: usize = 32;

impl Authority {
    pub fn new(secret: &Secret) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.expose().len() >= MIN_SECRET_LEN,
            "auth.secret (HOTLINE_AUTH__SECRET) must be set to at least {MIN_SECRET_LEN} characters"
        );
        Ok(Self {
            secret: secret.clone(),
        })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC takes a key of any length")
    }

    pub fn issue(
        &self,
        subject: &str,
        roles: &[Role],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> String {
        let claims = Claims {
            sub: subject.to_owned(),
            roles: roles.to_vec(),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
        };
        let claims = serde_json::to_vec(&claims).expect("claims serialise");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Caller, AuthError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let (_header, claims) = signing_input.split_once('.').ok_or(AuthError::Malformed)?;
        let claims = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| AuthError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| AuthError::Malformed)?;
        if claims.exp <= now.timestamp() {
            let expired = DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
            return Err(AuthError::Expired(expired));
        }
        Ok(Caller {
            subject: claims.sub,
            roles: claims.roles,
        })
    }

    /// Verifies an `authorization` header value (`Bearer <token>`).
    pub fn verify_header(
        &self,
        header: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?;
        self.verify(token.trim(), now)
    }
}

/// The caller of a gRPC request, if it holds one of `allowed` (or admin).
pub fn authorize<T>(
    request: &tonic::Request<T>,
    allowed: &[Role],
) -> Result<Caller, tonic::Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| tonic::Status::unauthenticated(AuthError::Missing.to_string()))?;
    if caller.has_any(allowed) {
        Ok(caller.clone())
    } else {
        let wanted: Vec<_> = allowed.iter().map(|r| r.as_str()).collect();
        Err(tonic::Status::permission_denied(format!(
            "{} may not do this: it needs one of the roles {}",
            caller.subject,
            wanted.join(", ")
        )))
    }
}

/// gRPC paths that need no token: health checks and reflection.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Tower layer that authenticates every gRPC call but the public ones.
#[derive(Clone)]
pub struct Authenticate {
    authority: Arc<Authority>,
}

impl Authenticate {
    pub fn new(authority: Arc<Authority>) -> Self {
        Self { authority }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = AuthenticateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthenticateService {
            inner,
            authority: self.authority.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthenticateService<S> {
    inner: S,
    authority: Arc<Authority>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthenticateService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use futures_util::future::Either;
        if is_public(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match self.authority.verify_header(header, Utc::now()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(error) => {
                tracing::debug!(path = request.uri().path(), %error, "refused unauthenticated call");
                Either::Right(std::future::ready(Ok(tonic::Status::unauthenticated(
                    error.to_string(),
                )
                .into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> Authority {
        Authority::new(&Secret::new("a-test-secret-that-is-long-enough-0123")).unwrap()
    }

    #[test]
    fn a_token_verifies_with_its_subject_and_roles() {
        let now = Utc::now();
        let token = authority().issue("ada", &[Role::Agent], now, Duration::hours(1));
        let caller = authority().verify(&token, now).unwrap();
        assert_eq!(caller.subject, "ada");
        assert_eq!(caller.roles, vec![Role::Agent]);
    }

    #[test]
    fn a_forged_expired_or_garbled_token_is_refused() {
        let now = Utc::now();
        let token = authority().issue("ada", &[Role::Agent], now, Duration::hours(1));
        let other = Authority::new(&Secret::new("another-secret-that-is-long-enough-999")).unwrap();
        assert_eq!(other.verify(&token, now), Err(AuthError::BadSignature));
        assert!(matches!(
            authority().verify(&token, now + Duration::hours(2)),
            Err(AuthError::Expired(_))
        ));
        assert_eq!(
            authority().verify("nonsense", now),
            Err(AuthError::Malformed)
        );
        // Claims swapped for an admin's keep the agent's signature: refused.
        let admin = authority().issue("ada", &[Role::Admin], now, Duration::hours(1));
        let forged = format!(
            "{}.{}",
            admin.rsplit_once('.').unwrap().0,
            token.rsplit_once('.').unwrap().1
        );
        assert_eq!(
            authority().verify(&forged, now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(Authority::new(&Secret::new("short")).is_err());
        assert!(Authority::new(&Secret::default()).is_err());
    }

    #[test]
    fn admin_passes_every_role_check_and_others_only_their_own() {
        let admin = Caller {
            subject: "root".into(),
            roles: vec![Role::Admin],
        };
        let tech = Caller {
            subject: "tom".into(),
            roles: vec![Role::Technician],
        };
        assert!(admin.has_any(&[Role::Agent]));
        assert!(tech.has_any(&[Role::Agent, Role::Technician]));
        assert!(!tech.has_any(&[Role::Agent, Role::Dispatcher]));
    }
}
