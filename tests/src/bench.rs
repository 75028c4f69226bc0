//! Small helpers shared by the benchmark binaries.

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads `name;dur=X` out of a Server-Timing header.
pub fn server_timing(header: &str, name: &str) -> Option<f64> {
    header
        .split(',')
        .filter_map(|part| part.trim().split_once(";dur="))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_server_timing_entries() {
        let h = "queue;dur=0.5, wasm;dur=12.25, decode;dur=3";
        assert_eq!(super::server_timing(h, "wasm"), Some(12.25));
        assert_eq!(super::server_timing(h, "decode"), Some(3.0));
        assert_eq!(super::server_timing(h, "cpu"), None);
    }
}
