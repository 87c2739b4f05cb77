//! Quick start: enqueue a few jobs on an embedded SQLite file, run them, and print what
//! happened to each — including a retry, a panic that the worker survives, a timeout, and the
//! cleanups that ran every time.
//!
//! ```text
//! cargo run --release --example quickstart            # uses ./mend-quickstart.db
//! cargo run --release --example quickstart -- my.db
//! ```

use std::sync::Arc;
use std::time::Duration;

use mend::{Client, FixedDelay, Handler, JobArgs, JobContext, JobError, Registry, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Resize {
    image: String,
    /// Fail this many attempts first (to show retries).
    flaky: i32,
}
impl JobArgs for Resize {
    const KIND: &'static str = "resize";
}

struct ResizeHandler;
impl Handler for ResizeHandler {
    type Args = Resize;
    type Output = String;
    async fn run(&self, ctx: JobContext, args: Resize) -> Result<String, JobError> {
        let image = args.image.clone();
        ctx.defer_named("remove-temp", move |exit| async move {
            println!("  cleanup for {image}: removed temp file after {exit:?}");
        });
        if ctx.attempt() <= args.flaky {
            return Err(JobError::retry(format!(
                "storage busy on attempt {}",
                ctx.attempt()
            )));
        }
        Ok(format!("{}@2x", args.image))
    }
    fn retry_policy(&self) -> Option<Arc<dyn mend::RetryPolicy>> {
        Some(Arc::new(FixedDelay(Duration::from_millis(200))))
    }
}

#[derive(Serialize, Deserialize)]
struct Explode;
impl JobArgs for Explode {
    const KIND: &'static str = "explode";
    fn configure(job: mend::NewJob) -> mend::NewJob {
        job.with_max_attempts(1)
    }
}

#[derive(Serialize, Deserialize)]
struct Slow;
impl JobArgs for Slow {
    const KIND: &'static str = "slow";
    fn configure(job: mend::NewJob) -> mend::NewJob {
        job.with_max_attempts(1)
            .with_timeout(Duration::from_millis(100))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mend-quickstart.db".into());
    let store: Arc<dyn mend::Store> = Arc::new(mend_sqlite::SqliteStore::open(&path).await?);

    let mut registry = Registry::new();
    registry.register(ResizeHandler);
    registry.register_fn(|_ctx, _: Explode| async move {
        if true {
            panic!("this handler always panics");
        }
        Ok::<_, JobError>(())
    });
    registry.register_fn(|ctx, _: Slow| async move {
        ctx.defer(|exit| async move { println!("  cleanup for slow job: ran after {exit:?}") });
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, JobError>(())
    });

    let worker = Worker::builder(store.clone())
        .registry(registry)
        .queue("default", 4)
        .build()
        .start()
        .await?;
    let client = Client::new(store);
    let mut ids = Vec::new();
    for (image, flaky) in [("cat.png", 0), ("dog.png", 2)] {
        ids.push(
            client
                .enqueue(&Resize {
                    image: image.into(),
                    flaky,
                })
                .await?
                .id,
        );
    }
    ids.push(client.enqueue(&Explode).await?.id);
    ids.push(client.enqueue(&Slow).await?.id);
    println!("enqueued {} jobs into {path}", ids.len());

    // Wait until every job has reached a final state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for id in &ids {
            let job = client.get(*id).await?.ok_or("job vanished")?;
            done &= job.state.is_final();
        }
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!();
    for id in &ids {
        let job = client.get(*id).await?.ok_or("job vanished")?;
        println!(
            "{} {:<8} {:<10} attempts={}",
            job.id,
            job.kind,
            job.state.as_str(),
            job.attempt
        );
        if let Some(result) = &job.result {
            println!("    result: {result}");
        }
        for e in &job.errors {
            println!("    attempt {} {}: {}", e.attempt, e.kind, e.message);
        }
    }
    let report = worker.shutdown(Duration::from_secs(5)).await;
    println!(
        "\nworker stopped cleanly ({report:?}); the worker survived the panic and the timeout."
    );
    Ok(())
}
