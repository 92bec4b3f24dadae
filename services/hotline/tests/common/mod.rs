//! Helpers of the end-to-end tests that run `hotline serve` as its own
//! process, so it can be killed with SIGKILL.

use std::net::SocketAddr;

use hotline_kit::testing::TestEnv;

/// A free loopback port (bound, read, released).
#[allow(dead_code)] // each test binary uses a part of this module
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[allow(dead_code)] // each test binary uses a part of this module
/// `hotline serve` (every module) in `env`, listening on `grpc` and `http`,
/// with `settings` as more environment; returns once it is ready.
pub async fn serve(
    env: &TestEnv,
    grpc: SocketAddr,
    http: SocketAddr,
    settings: &[(&str, &str)],
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .arg("serve")
        .env("HOTLINE_DATABASE_URL", env.config.database_url.expose())
        .env("HOTLINE_AMQP_URL", env.config.amqp_url.expose())
        .env("HOTLINE_REDIS_URL", env.config.redis_url.expose())
        .env("HOTLINE_NAMESPACE", &env.config.namespace)
        .env("HOTLINE_GRPC_ADDR", grpc.to_string())
        .env("HOTLINE_HTTP_ADDR", http.to_string())
        .env("HOTLINE_AUTH__SECRET", env.config.auth.secret.expose())
        .env("HOTLINE_INTAKE__SMTP_ADDR", "127.0.0.1:0")
        .env("HOTLINE_LOG__FILTER", "warn")
        .envs(settings.iter().copied())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = format!("http://{http}/readyz");
    for _ in 0..100 {
        let status = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &ready])
            .output()
            .await
            .unwrap();
        if status.stdout == b"200" {
            return child;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("hotline serve did not become ready");
}
