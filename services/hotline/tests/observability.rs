//! What an on-call engineer has of the whole fleet: `/metrics` as
//! Prometheus finds it right after a start (every counter there at zero with
//! its HELP line, so an alert's `increase()` sees the first dead letter,
//! failed page or breach), and logs that join traces.

mod common;

use hotline_kit::testing::TestEnv;

/// The series of `text` (name with labels) and their values.
fn series(text: &str) -> Vec<(&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name, value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn every_counter_is_described_and_at_zero_from_the_start() {
    let env = TestEnv::new().await.unwrap();
    env.migrate(&hotline::fleet::modules()).await.unwrap();
    let (grpc, http) = (common::free_port(), common::free_port());
    let mut desk = common::serve(&env, grpc, http, &[]).await;
    // The gauges of waiting tickets come with the sla module's first count.
    let mut text = String::new();
    for _ in 0..50 {
        let scraped = tokio::process::Command::new("curl")
            .args(["-sf", &format!("http://{http}/metrics")])
            .output()
            .await
            .unwrap();
        assert!(scraped.status.success(), "{scraped:?}");
        text = String::from_utf8(scraped.stdout).unwrap();
        if text.contains("hotline_tickets_awaiting_response ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let series = series(&text);
    for expected in [
        r#"hotline_tickets_opened_total{channel="email"}"#,
        r#"hotline_tickets_opened_total{channel="phone"}"#,
        r#"hotline_mail_accepted_total"#,
        r#"hotline_cti_events_total{event="newCall"}"#,
        r#"hotline_mail_sent_total{kind="reply"}"#,
        r#"hotline_pages_failed_total"#,
        r#"hotline_pages_unroutable_total"#,
        r#"hotline_sla_escalations_total"#,
        r#"hotline_dead_letters_total{service="sla"}"#,
        r#"hotline_dead_letters_total{service="pager"}"#,
        r#"hotline_dead_letters_total{service="intake"}"#,
        r#"hotline_consumer_redeliveries_total{service="sla"}"#,
        r#"hotline_events_published_total{service="tickets"}"#,
        r#"hotline_dead_letters{service="sla"}"#,
    ] {
        let found = series.iter().find(|(name, _)| *name == expected);
        assert_eq!(found.map(|s| s.1), Some(0.0), "{expected} in\n{text}");
    }
    assert!(
        series.contains(&("hotline_ready", 1.0)),
        "hotline_ready in\n{text}"
    );
    assert!(
        series.contains(&("hotline_tickets_awaiting_response", 0.0)),
        "{text}"
    );
    // Every metric has its HELP line, and every counter starts at zero.
    let types: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    assert!(types.len() >= 12, "{text}");
    for (name, kind) in &types {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line in\n{text}"
        );
        if *kind == "counter" {
            for (series, value) in series.iter().filter(|(s, _)| {
                s.strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            }) {
                assert_eq!(*value, 0.0, "{series} at start");
            }
        }
    }
    desk.kill().await.unwrap();
    env.cleanup_bus(&[]).await.unwrap();
}

#[tokio::test]
async fn json_logs_carry_the_trace_and_a_dead_collector_is_logged() {
    let env = TestEnv::new().await.unwrap();
    env.migrate(&hotline::fleet::modules()).await.unwrap();
    let (grpc, http) = (common::free_port(), common::free_port());
    // A collector that is not there: nothing listens on this port.
    let collector = format!("http://{}", common::free_port());
    let log_path = std::env::temp_dir().join(format!("hotline-{}.log", uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut desk = common::serve_logging_to(
        &env,
        grpc,
        http,
        &[
            ("HOTLINE_LOG__FILTER", "info"),
            ("HOTLINE_LOG__FORMAT", "json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
        ],
        log.into(),
    )
    .await;
    let created = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["tickets", "create", "--subject", "Fan", "--body", "noise"])
        .env("HOTLINE_SERVER", grpc.to_string())
        .env(
            "HOTLINE_TOKEN",
            env.token("ada", hotline_kit::auth::Role::Agent),
        )
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let lines = |wanted: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .filter(|line| line.contains(wanted))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    };
    let mut export_failed = Vec::new();
    for _ in 0..100 {
        export_failed = lines("BatchSpanProcessor.ExportError");
        if !export_failed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    desk.kill().await.unwrap();
    let opened = lines("ticket opened");
    let started = lines("caught up with overdue clocks");
    let all = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();
    assert_eq!(opened.len(), 1, "{all}");
    let hex = |value: &serde_json::Value, len: usize| {
        value
            .as_str()
            .is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit()))
    };
    assert!(hex(&opened[0]["trace_id"], 32), "{}", opened[0]);
    assert!(hex(&opened[0]["span_id"], 16), "{}", opened[0]);
    assert!(opened[0]["fields"]["ticket"].is_string(), "{}", opened[0]);
    // Lines outside any span carry no ids rather than empty ones.
    assert!(started[0].get("trace_id").is_none(), "{}", started[0]);
    assert!(
        !export_failed.is_empty(),
        "no export failure logged:\n{all}"
    );
    assert_eq!(export_failed[0]["level"], "ERROR", "{}", export_failed[0]);
    env.cleanup_bus(&[]).await.unwrap();
}
