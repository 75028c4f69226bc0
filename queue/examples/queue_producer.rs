//! Test helper: sends numbered messages to an embedded queue as fast as acknowledgements
//! come back, printing each number once acknowledged, until killed.

use imgfleet_queue::embedded::EmbeddedStore;
use imgfleet_queue::{OutgoingMessage, QueueSpec};
use std::io::Write;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: queue_producer DIR");
    let store = EmbeddedStore::open(std::path::Path::new(&dir))?;
    let q = store.queue(QueueSpec::new("durable")).await?;
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        q.send(OutgoingMessage::new(n.to_string())).await?;
        writeln!(out, "{n}")?;
        out.flush()?;
    }
    Ok(())
}
