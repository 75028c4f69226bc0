//! Execution: the manifest's components compiled and pre-instantiated (`runtime`), placed on
//! the machine's cores (`slots`), fed from the jobs queue by one worker per slot (`worker`),
//! their answers routed back to the waiting request (`completions`).

pub mod completions;
pub mod cpu;
pub mod manifest;
pub mod messages;
pub mod runtime;
pub mod slots;
pub mod worker;
