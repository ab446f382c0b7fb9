//! Session settings and information: TYPE MODE STRU STAT HELP SITE (RFC 959), FEAT OPTS
//! (RFC 2389), UTF8 (RFC 2640).

use std::io;

use ferry_proto::{Reply, TransferType};

use crate::listing::Facts;
use crate::quota::human;
use crate::session::Session;

/// FEAT lines (RFC 2389): one feature per line, indented by the reply encoder; the MLST line
/// is added per session because it marks the selected facts.
const FEATURES: &[&str] = &[
    "EPRT",
    "EPSV",
    "MDTM",
    "PASV",
    "REST STREAM",
    "SIZE",
    "TVFS",
    "UTF8",
    "SITE QUOTA",
];

/// Every command the server knows, for HELP.
const COMMANDS: &str = "ABOR ACCT ALLO APPE AUTH CCC CDUP CWD DELE EPRT EPSV FEAT HASH HELP LIST MD5 MDTM MKD MLSD MLST MMD5 MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD QUIT RANG REST RETR RMD RNFR RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCRC XCUP XCWD XMD5 XMKD XPWD XRMD XSHA1 XSHA256 XSHA512";

pub(super) async fn transfer_type(s: &mut Session, t: TransferType) -> io::Result<()> {
    s.transfer_type = t;
    let text = match t {
        TransferType::Ascii => "Type set to A",
        TransferType::Image => "Type set to I",
    };
    s.reply(200, text).await
}

pub(super) async fn mode(s: &mut Session, mode: char) -> io::Result<()> {
    match mode {
        'S' => s.reply(200, "Mode set to S").await,
        'B' | 'C' => s.reply(504, "Only MODE S (stream) is supported").await,
        _ => s.reply(501, "Unknown MODE").await,
    }
}

pub(super) async fn stru(s: &mut Session, stru: char) -> io::Result<()> {
    match stru {
        'F' => s.reply(200, "Structure set to F").await,
        'R' | 'P' => s.reply(504, "Only STRU F (file) is supported").await,
        _ => s.reply(501, "Unknown STRU").await,
    }
}

pub(super) async fn feat(s: &mut Session) -> io::Result<()> {
    let mut features: Vec<String> = FEATURES.iter().map(|f| f.to_string()).collect();
    features.push(s.mlst_facts.feat_line());
    features.extend(super::hash::feat_lines(s));
    if s.tls.is_some() {
        // RFC 4217 section 6: one AUTH line per mechanism, then PBSZ and PROT.
        features.extend(["AUTH TLS", "AUTH SSL", "PBSZ", "PROT"].map(String::from));
    }
    features.sort();
    let mut lines = vec!["Features:".to_string()];
    lines.extend(features);
    lines.push("End".to_string());
    s.send(Reply::multi(211, lines)).await
}

pub(super) async fn opts(s: &mut Session, opt: &str) -> io::Result<()> {
    let mut words = opt.split_whitespace();
    let name = words.next().unwrap_or("").to_ascii_uppercase();
    let value = words.next().unwrap_or("").to_ascii_uppercase();
    match (name.as_str(), value.as_str()) {
        // Names are always UTF-8 (RFC 2640); OFF is accepted and changes nothing, as vsftpd.
        ("UTF8" | "UTF-8", "ON" | "OFF" | "") => s.reply(200, "Always in UTF8 mode").await,
        // RFC 3659 7.9: the reply names the facts now selected, those we know of the request.
        ("MLST", _) => {
            let list = opt.split_whitespace().nth(1).unwrap_or("");
            s.mlst_facts = Facts::select(list);
            let text = format!("MLST OPTS {}", s.mlst_facts.selected());
            s.reply(200, text).await
        }
        ("HASH", value) => super::hash::opts(s, value).await,
        _ => s.reply(501, "Option not understood").await,
    }
}

pub(super) async fn help(s: &mut Session, topic: Option<&str>) -> io::Result<()> {
    if let Some(topic) = topic {
        let verb = topic.to_ascii_uppercase();
        return if COMMANDS.split(' ').any(|c| c == verb) {
            s.reply(
                214,
                format!("{verb} is supported; see RFC 959, 2389, 2428 and 3659"),
            )
            .await
        } else if verb == "SITE" {
            site_help(s).await
        } else {
            s.reply(502, format!("Unknown command {verb}")).await
        };
    }
    let mut lines = vec!["The following commands are recognized:".to_string()];
    let words: Vec<&str> = COMMANDS.split(' ').collect();
    lines.extend(words.chunks(12).map(|chunk| chunk.join(" ")));
    lines.push("Help OK".to_string());
    s.send(Reply::multi(214, lines)).await
}

pub(super) async fn site(s: &mut Session, sub: &str) -> io::Result<()> {
    let verb = sub
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match verb.as_str() {
        "HELP" => site_help(s).await,
        "QUOTA" => site_quota(s).await,
        _ => s.reply(502, format!("Unknown SITE command {verb}")).await,
    }
}

async fn site_help(s: &mut Session) -> io::Result<()> {
    let lines = vec![
        "SITE commands:".to_string(),
        "HELP".to_string(),
        "QUOTA  show your disk usage and limits".to_string(),
        "End".to_string(),
    ];
    s.send(Reply::multi(214, lines)).await
}

/// SITE QUOTA: the user's usage against their limits, exact and readable.
async fn site_quota(s: &mut Session) -> io::Result<()> {
    let Some(quota) = s.quota() else {
        return s.reply(530, "Please login with USER and PASS").await;
    };
    let (used, limits) = quota.report();
    let bytes = match limits.bytes {
        Some(limit) => format!(
            "Bytes: {} used of {} ({} left; {} of {})",
            used.bytes,
            limit,
            limit.saturating_sub(used.bytes),
            human(used.bytes),
            human(limit)
        ),
        None => format!(
            "Bytes: {} used ({}), no limit",
            used.bytes,
            human(used.bytes)
        ),
    };
    let files = match limits.files {
        Some(limit) => format!(
            "Files: {} used of {} ({} left)",
            used.files,
            limit,
            limit.saturating_sub(used.files)
        ),
        None => format!("Files: {} used, no limit", used.files),
    };
    let lines = vec![
        format!("Quota for {}:", s.user_name()),
        bytes,
        files,
        "End".to_string(),
    ];
    s.send(Reply::multi(200, lines)).await
}

pub(super) async fn status(s: &mut Session) -> io::Result<()> {
    let lines = vec![
        "ferry FTP server status:".to_string(),
        format!("Connected from {}", s.peer),
        match s.is_logged_in() {
            true => format!("Logged in as {}", s.user_name()),
            false => "Not logged in".to_string(),
        },
        format!(
            "TYPE: {}, STRUcture: File, MODE: Stream",
            if s.transfer_type == TransferType::Ascii {
                "ASCII"
            } else {
                "BINARY"
            }
        ),
        match s.data {
            Some(_) => "Data connection prepared".to_string(),
            None => "No data connection".to_string(),
        },
        "End of status".to_string(),
    ];
    s.send(Reply::multi(211, lines)).await
}
