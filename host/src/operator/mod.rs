//! What operators use: the command line (`cli`, `commands`), the load generator (`load`),
//! fleet sizing (`capacity`), metrics (`telemetry`) and what the health probes report
//! (`health`).

pub mod capacity;
pub mod cli;
pub mod commands;
pub mod health;
pub mod load;
pub mod telemetry;
