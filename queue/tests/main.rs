//! The queue's one integration-test binary: the behavioural suite (`suite`) run against every
//! backend (embedded, partitioned, SQS on moto_server, JetStream on a real cluster), plus
//! what each backend must prove alone.

#[macro_use]
mod suite;

mod embedded;
mod jetstream;
mod jetstream_partitioned;
mod partitioned;
mod sqs;
