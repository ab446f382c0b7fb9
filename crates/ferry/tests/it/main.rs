//! Integration tests of the ferry binary and server, driven by real clients.
#![allow(clippy::unwrap_used)]

mod user_cli;
