//! ferry's multi-user FTP server: one tokio task per control connection, every path confined
//! to the user's home, uploads that replace files only when complete.

mod checksum;
mod commands;
pub mod config;
pub mod data;
pub mod listener;
pub mod listing;
pub mod login_cache;
pub mod metrics;
pub mod password_checks;
pub mod pg;
pub mod proxy;
pub mod quota;
mod session;
pub mod storage;
pub mod throttle;
pub mod tls;
pub mod users;
pub mod xferlog;

pub use config::ServerConfig;
pub use listener::{Listener, Operations, run, run_with};
