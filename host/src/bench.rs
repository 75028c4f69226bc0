//! Benchmarks that print a table (see docs/BENCHMARKS.md).

use crate::cli::BenchArgs;

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
