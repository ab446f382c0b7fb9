//! Integration tests of the ferry binary and server, driven by clients nobody here wrote:
//! suppaftp, Python's ftplib, curl and lftp, against a real server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
mod binary;
mod checksum;
mod client_ferry;
mod client_pyftpdlib;
mod concurrency;
mod curl;
mod echo;
mod faults;
mod ftplib;
mod ftps;
mod haproxy;
mod jail;
mod lftp;
mod metrics;
mod postgres;
mod protocol;
mod quota;
mod raw;
mod replay;
mod resume;
mod s3;
mod smoke;
mod user_cli;
