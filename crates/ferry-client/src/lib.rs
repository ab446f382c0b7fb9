//! ferry's FTP/FTPS client library: a typed session (login, listings, transfers with offsets,
//! server checksums) on ftp://, ftpes:// and ftps:// URLs, usable against any server.

pub mod client;
pub mod listing;
pub mod tls;
pub mod url;

pub use client::{Checksum, Client, ClientError, Features, Options, StoreMode};
pub use listing::RemoteEntry;
pub use url::{Endpoint, Security};
