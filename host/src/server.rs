//! `imgfleet up`: load the components, start the slots, serve until SIGTERM/Ctrl-C, then
//! finish the requests already in flight.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::cli::UpArgs;
use crate::manifest::Manifest;
use crate::runtime::Runtime;
use crate::slots::Slots;

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut manifest = Manifest::load(&args.manifest)?;
    if let Some(dir) = &args.component_dir {
        manifest = manifest.with_component_dir(dir);
    }
    let runtime = Runtime::new(&manifest, args.runtime.runtime_config())?;
    let cores = args.runtime.cores();
    let slots = Slots::start(runtime, cores, args.queue_capacity);
    let state = AppState {
        manifest: Arc::new(manifest),
        slots,
        limits: args.limits(),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, cores, "serving");
    // Scripts and tests read this line to find the port when listening on :0.
    println!("imgfleet listening on http://{addr}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
