//! Test helper, killed by the embedded queue's tests.
//!
//! `queue_producer DIR`: sends numbered messages as fast as acknowledgements come back,
//! printing each number once acknowledged, until killed.
//!
//! `queue_producer DIR churn [FROM]`: sends 1 KiB messages numbered from FROM (default 0)
//! and deletes the oldest one after each send, on a store that compacts every 64 KiB, so
//! that a kill lands as often in a compaction as in an append; prints `s N` once N is
//! acknowledged and `d N` just before N's delete is made (printed after it, a kill between
//! the delete and the line would make a deleted message look lost). A test that restarts it
//! on the same store gives each run its own FROM, so that a number names one message.

use imgfleet_queue::embedded::{EmbeddedOptions, EmbeddedStore};
use imgfleet_queue::{OutgoingMessage, QueueSpec, ReceiveRequest};
use std::io::Write;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: queue_producer DIR [churn]");
    let churn = args.next().as_deref() == Some("churn");
    let from: u64 = match args.next() {
        Some(from) => from.parse()?,
        None => 0,
    };
    let options = EmbeddedOptions {
        compact_min_bytes: if churn { 64 * 1024 } else { 64 * 1024 * 1024 },
    };
    let store = EmbeddedStore::open_with(std::path::Path::new(&dir), options)?;
    let q = store.queue(QueueSpec::new("durable")).await?;
    let mut out = std::io::stdout().lock();
    for n in from.. {
        let body = if churn {
            format!("{n:<1024}")
        } else {
            n.to_string()
        };
        q.send(OutgoingMessage::new(body)).await?;
        writeln!(out, "{}{n}", if churn { "s " } else { "" })?;
        out.flush()?;
        if churn && n > from + 4 {
            let got = q
                .receive(ReceiveRequest {
                    max_messages: 1,
                    ..Default::default()
                })
                .await?;
            for m in got {
                writeln!(out, "d {}", String::from_utf8_lossy(&m.body).trim())?;
                out.flush()?;
                q.delete(&m.receipt).await?;
            }
        }
    }
    Ok(())
}
