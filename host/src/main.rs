use clap::Parser;
use imgfleet_host::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("IMGFLEET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = if cli.log_spans {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Up(args) => rt.block_on(imgfleet_host::server::up(*args)),
        Command::Tenants(a) => rt.block_on(imgfleet_host::operator::tenants(&a.store, a.action)),
        Command::Keys(a) => rt.block_on(imgfleet_host::operator::keys(&a.store, a.action)),
        Command::Usage(a) => rt.block_on(imgfleet_host::operator::usage(&a.store, a.action)),
        Command::AdminToken(store) => {
            println!(
                "{}",
                imgfleet_host::operator::admin_token_file(&store.data_dir)?
            );
            Ok(())
        }
    }
}
