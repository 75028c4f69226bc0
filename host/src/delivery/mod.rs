//! Signed GET delivery, what the host alone needs: making signed URLs (`imgfleet url
//! sign`), the result cache's tiers and purges as the host reads them, and single flight.
//! The request path is `api/images/`; the fetchers and the ETags, which the Lambda API
//! shares, are the stores' `origins` port; the cache's entries are the stores' `results`.

pub mod cache;
pub mod flight;
pub mod hot;
pub mod url;
