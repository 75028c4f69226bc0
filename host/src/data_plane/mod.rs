//! The data plane of identity: every request's credential is decided here from memory
//! (`auth_cache`, following the identity store's change log), by the auth-check component
//! and this host's rate limits (`gate`), with monthly quotas (`monthly`).

pub mod auth_cache;
pub mod gate;
pub mod monthly;
