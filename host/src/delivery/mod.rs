//! Signed GET delivery, the pure part the host alone needs: making signed URLs (`imgfleet
//! url sign`). The request path is `api/images.rs`; the fetchers and the ETags, which the
//! Lambda API shares, are the stores' `origins` port.

pub mod url;
