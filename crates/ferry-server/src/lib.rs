//! ferry's multi-user FTP server.

pub mod users;
