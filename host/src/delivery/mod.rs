//! Signed GET delivery, the pure parts: making signed URLs (`imgfleet url sign`) and the
//! ETags that let browsers and CDNs revalidate an output against its source. The request
//! path that uses them is `api/images.rs`; the fetchers are the stores' `origins` port.

pub mod etag;
pub mod url;
