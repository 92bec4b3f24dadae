//! `smtp`: mail into tickets. C concurrent SMTP sessions, each on one
//! connection, send 20 KB messages with a small attachment, each from a
//! sender of its own (as many customers write), for D. A message counts as accepted on its `250`, and as in
//! tickets once intake has recorded its ticket (`intake.mails.ticket_number`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hotline_kit::{config::Config, db};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::{ms, percentile, round, until_done};

/// A 20 KB message: text, and a small attachment (base64).
fn message(run: &str, line: usize, n: u64) -> String {
    let text = "The recorder at gate 2 lost its cameras after the storm.\r\n".repeat(310);
    let attachment = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\r\n".repeat(20);
    format!(
        "From: load{line}-{n}@customer.example\r\nTo: help@support.example\r\n\
         Subject: Load {run} {line}/{n}: cameras lost\r\n\
         Message-ID: <lg-{run}-{line}-{n}@customer.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --b\r\nContent-Type: image/png; name=photo.png\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=photo.png\r\n\r\n{attachment}--b--\r\n"
    )
}

/// Reads one (possibly multi-line) reply; its code.
async fn reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<u16> {
    loop {
        let mut line = String::new();
        anyhow::ensure!(reader.read_line(&mut line).await? > 0, "the server closed");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .context("no reply code");
        }
    }
}

pub async fn smtp(concurrency: usize, duration: Duration) -> anyhow::Result<()> {
    let config = Config::load(None)?;
    let addr =
        std::env::var("HOTLINE_INTAKE__SMTP_ADDR").unwrap_or_else(|_| "127.0.0.1:2525".into());
    let pool = db::pool(&config, "intake")?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let deadline = started + duration;
    let sessions: Vec<_> = (0..concurrency)
        .map(|line| {
            let (addr, run, latencies, accepted, refused) =
                (addr.clone(), run.clone(), latencies.clone(), accepted.clone(), refused.clone());
            tokio::spawn(async move {
                let socket = TcpStream::connect(&addr).await?;
                socket.set_nodelay(true)?;
                let (reader, mut writer) = socket.into_split();
                let mut reader = BufReader::new(reader);
                reply(&mut reader).await?;
                writer.write_all(b"EHLO loadgen.example\r\n").await?;
                reply(&mut reader).await?;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let sent = Instant::now();
                    // Pipelined envelope, then the message.
                    writer
                        .write_all(
                            format!("MAIL FROM:<load-{run}-{line}-{n}@customer.example>\r\nRCPT TO:<help@support.example>\r\nDATA\r\n")
                                .as_bytes(),
                        )
                        .await?;
                    let codes = [reply(&mut reader).await?, reply(&mut reader).await?, reply(&mut reader).await?];
                    if codes != [250, 250, 354] {
                        refused.fetch_add(1, Ordering::Relaxed);
                        writer.write_all(b"RSET\r\n").await?;
                        reply(&mut reader).await?;
                        continue;
                    }
                    writer.write_all(message(&run, line, n).as_bytes()).await?;
                    writer.write_all(b".\r\n").await?;
                    if reply(&mut reader).await? == 250 {
                        latencies.lock().unwrap().push(ms(sent.elapsed()));
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                writer.write_all(b"QUIT\r\n").await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for session in sessions {
        session.await??;
    }
    let sending = started.elapsed();
    // By envelope sender, which names the run: reading the stored messages
    // themselves would cost the database more than intake's own work.
    let (done, total) = until_done(
        &pool,
        "SELECT count(ticket_number), count(*) FROM mails WHERE mail_from LIKE $1",
        &format!("load-{run}-%"),
    )
    .await?;
    let into_tickets = started.elapsed();
    let mut latencies = latencies.lock().unwrap().clone();
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "scenario": "smtp",
            "sessions": concurrency,
            "message_bytes": message(&run, 0, 0).len(),
            "duration_s": round(sending.as_secs_f64()),
            "accepted": accepted,
            "refused": refused.load(Ordering::Relaxed),
            "accepted_per_s": round(accepted as f64 / sending.as_secs_f64()),
            "mails": total,
            "mails_in_tickets": done,
            "all_in_tickets_s": round(into_tickets.as_secs_f64()),
            "mails_into_tickets_per_s": round(done as f64 / into_tickets.as_secs_f64()),
            "smtp_p50_ms": percentile(&mut latencies, 50.0),
            "smtp_p99_ms": percentile(&mut latencies, 99.0),
            "smtp_p999_ms": percentile(&mut latencies, 99.9),
        })
    );
    Ok(())
}
