//! The stores' one integration-test binary: each port's behavioural suite (`suite`) run
//! against every backend (SQLite, PostgreSQL on a real server, DynamoDB on moto_server, local
//! files, JetStream on a real nats-server).

#[macro_use]
mod suite;

mod dynamodb;
mod file;
mod jetstream;
mod postgres;
mod sqlite;
