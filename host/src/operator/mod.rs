//! What operators use: the command line (`cli`, `commands`), the load generator (`load`),
//! fleet sizing (`capacity`), metrics (`telemetry`), what the health probes report
//! (`health`), and traces: W3C trace context across hops (`trace_context`), exported over
//! OTLP when configured (`otlp`).

pub mod capacity;
pub mod cli;
pub mod commands;
pub mod health;
pub mod load;
pub mod otlp;
pub mod telemetry;
pub mod trace_context;
