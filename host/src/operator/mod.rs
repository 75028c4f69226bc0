//! What operators use: the command line (`cli`, `commands`), the load generator (`load`),
//! fleet sizing (`capacity`) and metrics (`telemetry`).

pub mod capacity;
pub mod cli;
pub mod commands;
pub mod load;
pub mod telemetry;
