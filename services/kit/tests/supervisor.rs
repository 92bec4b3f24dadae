//! The supervisor owns the lifecycle: a failing module task stops the whole
//! process with an error; a stop signal drains and ends it cleanly.

use std::time::Duration;

use hotline_kit::{
    cache::Redis,
    supervisor::{App, Module, ModuleContext, start_order},
    testing::TestEnv,
};

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations");

fn failing(context: &mut ModuleContext) -> anyhow::Result<()> {
    context.spawn("doomed", async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        anyhow::bail!("the disk is on fire")
    });
    Ok(())
}

fn patient(context: &mut ModuleContext) -> anyhow::Result<()> {
    let cancel = context.cancel.clone();
    context.spawn("waiter", async move {
        cancel.cancelled().await;
        Ok(())
    });
    Ok(())
}

fn module(
    name: &'static str,
    depends_on: &'static [&'static str],
    init: fn(&mut ModuleContext) -> anyhow::Result<()>,
) -> Module {
    Module {
        name,
        depends_on,
        schema: "supervised",
        migrations: &NO_MIGRATIONS,
        consumes: &[],
        init,
    }
}

#[tokio::test]
async fn a_failing_task_stops_the_process_with_its_error() {
    let env = TestEnv::new().await.unwrap();
    let app = App::start(
        env.config.clone(),
        &[
            module("doomed", &[], failing),
            module("patient", &[], patient),
        ],
    )
    .await
    .unwrap();
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        app.run_until(std::future::pending()),
    )
    .await
    .expect("the process stops by itself");
    let error = format!("{:#}", ended.unwrap_err());
    assert!(error.contains("doomed/doomed"), "{error}");
    assert!(error.contains("the disk is on fire"), "{error}");
}

#[tokio::test]
async fn a_stop_signal_drains_every_module_and_ends_cleanly() {
    let env = TestEnv::new().await.unwrap();
    let app = env.start(&[module("patient", &[], patient)]).await.unwrap();
    app.await_readiness(200, Duration::from_secs(10))
        .await
        .unwrap();
    let (status, body) = app.http_get("/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("stops promptly")
        .unwrap();
}

#[test]
fn modules_start_after_what_they_depend_on() {
    let order = start_order(&[
        module("sla", &["tickets"], patient),
        module("pager", &["sla"], patient),
        module("tickets", &[], patient),
    ])
    .unwrap();
    let names: Vec<_> = order.iter().map(|m| m.name).collect();
    assert_eq!(names, ["tickets", "sla", "pager"]);
    // A dependency running elsewhere imposes no order.
    assert_eq!(
        start_order(&[module("sla", &["tickets"], patient)])
            .unwrap()
            .len(),
        1
    );
    assert!(start_order(&[module("a", &["b"], patient), module("b", &["a"], patient)]).is_err());
}

#[test]
fn redis_keys_live_under_the_namespace() {
    let url = hotline_kit::config::Secret::new("redis://127.0.0.1:6379/");
    let one = Redis::new(&url, "t0001").unwrap();
    let two = Redis::new(&url, "t0002").unwrap();
    assert_eq!(one.key("sla:due"), "t0001:sla:due");
    assert_ne!(one.key("sla:due"), two.key("sla:due"));
}
