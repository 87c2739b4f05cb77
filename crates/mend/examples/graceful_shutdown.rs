//! Graceful shutdown: run a worker until SIGTERM or Ctrl-C. In-flight jobs get the drain
//! deadline to finish; past it they are cancelled, their `ctx.defer` cleanups run (told
//! `Shutdown`), and they go back to `available` without using up an attempt. A second signal
//! cuts the drain short.
//!
//! ```text
//! cargo run --example graceful_shutdown        # then press Ctrl-C (twice to cut the drain)
//! ```

use std::sync::Arc;
use std::time::Duration;

use mend::{Client, JobArgs, JobError, Registry, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Render {
    frame: u32,
}
impl JobArgs for Render {
    const KIND: &'static str = "render";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let dir = std::env::temp_dir().join("mend-graceful-shutdown.db");
    let store: Arc<dyn mend::Store> = Arc::new(
        mend_sqlite::SqliteStore::open(dir.to_str().ok_or("temp path is not UTF-8")?).await?,
    );

    let mut registry = Registry::new();
    registry.register_fn(|ctx, args: Render| async move {
        ctx.defer(move |exit| async move {
            println!("frame {}: cleanup after {exit:?}", args.frame);
        });
        // Each frame takes a few seconds: long enough to be caught by a Ctrl-C.
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!("frame {} rendered", args.frame);
        Ok::<_, JobError>(())
    });
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .queue("default", 2)
        .build()
        .start()
        .await?;
    let client = Client::new(store);
    for frame in 0..6 {
        client.enqueue(&Render { frame }).await?;
    }
    println!("rendering 6 frames, 2 at a time; press Ctrl-C to stop (again to stop at once)");
    let report = worker.run_until_signal(Duration::from_secs(5)).await;
    println!("stopped: {report:?}; unfinished frames are back in the queue for the next run");
    Ok(())
}
