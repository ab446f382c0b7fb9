//! FTP commands parsed from one control line.
//!
//! RFC 959 (the base set), RFC 2389 (FEAT, OPTS), RFC 2428 (EPRT, EPSV), RFC 3659 (SIZE, MDTM,
//! MLST, MLSD, REST STREAM), RFC 2640 (UTF-8 path names), RFC 4217 (AUTH, PBSZ, PROT) and the
//! X-variants from RFC 775 that old clients still send. Verbs are case-insensitive; arguments are
//! everything after the first space, kept byte for byte (file names may contain spaces).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// A secret typed by a user. Debug and Display print asterisks so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for hashing and verification only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// Representation type (TYPE, RFC 959 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    /// ASCII: line endings are converted to CRLF on the wire.
    Ascii,
    /// Image (binary): bytes are sent unchanged.
    Image,
}

/// The argument of EPSV (RFC 2428 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// `EPSV` or `EPSV 1`/`EPSV 2`: open a passive listener.
    Open,
    /// `EPSV ALL`: from now on refuse PORT, EPRT and PASV.
    All,
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Command {
    User(String),
    Pass(Password),
    Acct,
    Quit,
    Noop,
    Syst,
    Type(TransferType),
    Mode(char),
    Stru(char),
    Pwd,
    Cwd(String),
    Cdup,
    Mkd(String),
    Rmd(String),
    Dele(String),
    Rnfr(String),
    Rnto(String),
    /// LIST with `ls`-style flags (`-a`, `-l`, `-la`) removed.
    List(Option<String>),
    Nlst(Option<String>),
    Retr(String),
    Stor(String),
    Appe(String),
    Stou,
    Pasv,
    Port(SocketAddrV4),
    Rest(u64),
    Abor,
    Stat(Option<String>),
    Help(Option<String>),
    Allo,
    Site(String),
    Feat,
    Opts(String),
    Epsv(EpsvArg),
    Eprt(SocketAddr),
    Size(String),
    Mdtm(String),
    Mlst(Option<String>),
    Mlsd(Option<String>),
    Auth(String),
    Pbsz(String),
    Prot(String),
    /// CCC: clear the control channel (RFC 4217 section 6); ferry refuses it.
    Ccc,
    /// HASH path (draft-bryan-ftpext-hash-02): the selected algorithm over the selected range.
    Hash(String),
    /// RANG start end: the byte range the next HASH covers (`RANG 1 0` resets).
    Rang(u64, u64),
    /// XSHA256/XSHA512/XSHA1/XMD5/XCRC path [start end]: the widely deployed aliases.
    XHash {
        /// Which algorithm the verb names.
        algorithm: HashAlgorithm,
        /// The file.
        path: String,
        /// Optional start and end offsets that follow the name.
        range: Option<(u64, u64)>,
    },
    /// MD5 path (draft-twine-ftpmd5): MD5 of a whole file.
    Md5(String),
    /// MMD5 path[,path...]: MD5 of several files.
    Mmd5(String),
}

/// Checksum algorithms for HASH and its aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256, the default.
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1 (legacy clients).
    Sha1,
    /// MD5 (legacy clients).
    Md5,
    /// CRC-32 (IEEE), as XCRC.
    Crc32,
}

impl HashAlgorithm {
    /// Every algorithm, in the order FEAT lists them.
    pub const ALL: [HashAlgorithm; 5] = [
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha1,
        HashAlgorithm::Md5,
        HashAlgorithm::Crc32,
    ];

    /// The name used by HASH, FEAT and OPTS HASH (IANA hash names).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "SHA-256",
            HashAlgorithm::Sha512 => "SHA-512",
            HashAlgorithm::Sha1 => "SHA-1",
            HashAlgorithm::Md5 => "MD5",
            HashAlgorithm::Crc32 => "CRC32",
        }
    }

    /// Parses a name case-insensitively.
    pub fn from_name(name: &str) -> Option<HashAlgorithm> {
        HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// Why a line is not a command we can run; each variant maps to one reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Blank line: 500.
    #[error("empty command line")]
    Empty,
    /// Verb not implemented: 502.
    #[error("command not implemented: {0}")]
    Unknown(String),
    /// Argument missing or malformed: 501.
    #[error("{0}")]
    BadArgument(&'static str),
    /// Well-formed but a parameter value we do not support (TYPE E, MODE B): 504.
    #[error("{0}")]
    Unsupported(&'static str),
    /// EPRT/EPSV with a network protocol other than 1 (IPv4) or 2 (IPv6): 522 (RFC 2428).
    #[error("Network protocol not supported, use (1,2)")]
    NetworkProtocol,
}

impl ParseError {
    /// The reply code this error is answered with.
    pub fn reply_code(&self) -> u16 {
        match self {
            ParseError::Empty => 500,
            ParseError::Unknown(_) => 502,
            ParseError::BadArgument(_) => 501,
            ParseError::Unsupported(_) => 504,
            ParseError::NetworkProtocol => 522,
        }
    }
}

impl Command {
    /// Parses one line (without its line ending).
    pub fn parse(line: &str) -> Result<Command, ParseError> {
        let line = line.trim_start_matches(' ');
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, arg),
            None => (line, ""),
        };
        if verb.is_empty() {
            return Err(ParseError::Empty);
        }
        let verb = verb.to_ascii_uppercase();
        let cmd = match verb.as_str() {
            "USER" => Command::User(required(arg, "USER needs a user name")?),
            "PASS" => Command::Pass(Password::new(arg)),
            "ACCT" => Command::Acct,
            "QUIT" => no_arg(arg, Command::Quit)?,
            "NOOP" => Command::Noop,
            "SYST" => no_arg(arg, Command::Syst)?,
            "TYPE" => Command::Type(parse_type(arg)?),
            "MODE" => Command::Mode(single_letter(arg, "MODE needs one letter")?),
            "STRU" => Command::Stru(single_letter(arg, "STRU needs one letter")?),
            "PWD" | "XPWD" => no_arg(arg, Command::Pwd)?,
            "CWD" | "XCWD" => Command::Cwd(path(arg)?),
            "CDUP" | "XCUP" => no_arg(arg, Command::Cdup)?,
            "MKD" | "XMKD" => Command::Mkd(path(arg)?),
            "RMD" | "XRMD" => Command::Rmd(path(arg)?),
            "DELE" => Command::Dele(path(arg)?),
            "RNFR" => Command::Rnfr(path(arg)?),
            "RNTO" => Command::Rnto(path(arg)?),
            "LIST" => Command::List(optional_path(strip_ls_flags(arg))?),
            "NLST" => Command::Nlst(optional_path(strip_ls_flags(arg))?),
            "RETR" => Command::Retr(path(arg)?),
            "STOR" => Command::Stor(path(arg)?),
            "APPE" => Command::Appe(path(arg)?),
            "STOU" => Command::Stou,
            "PASV" => no_arg(arg, Command::Pasv)?,
            "PORT" => Command::Port(parse_port(arg)?),
            "REST" => Command::Rest(parse_offset(arg)?),
            "ABOR" => Command::Abor,
            "STAT" => Command::Stat(optional_path(strip_ls_flags(arg))?),
            "HELP" => Command::Help(optional(arg)),
            "ALLO" => Command::Allo,
            "SITE" => Command::Site(required(arg, "SITE needs a subcommand")?),
            "FEAT" => Command::Feat,
            "OPTS" => Command::Opts(required(arg, "OPTS needs an option")?),
            "EPSV" => Command::Epsv(parse_epsv(arg)?),
            "EPRT" => Command::Eprt(parse_eprt(arg)?),
            "SIZE" => Command::Size(path(arg)?),
            "MDTM" => Command::Mdtm(path(arg)?),
            "MLST" => Command::Mlst(optional_path(arg)?),
            "MLSD" => Command::Mlsd(optional_path(arg)?),
            "AUTH" => Command::Auth(required(arg, "AUTH needs a mechanism")?),
            "PBSZ" => Command::Pbsz(required(arg, "PBSZ needs a size")?),
            "PROT" => Command::Prot(required(arg, "PROT needs a level")?),
            "CCC" => no_arg(arg, Command::Ccc)?,
            "HASH" => Command::Hash(path(arg)?),
            "RANG" => parse_rang(arg)?,
            "XSHA256" => x_hash(HashAlgorithm::Sha256, arg)?,
            "XSHA512" => x_hash(HashAlgorithm::Sha512, arg)?,
            "XSHA1" => x_hash(HashAlgorithm::Sha1, arg)?,
            "XMD5" => x_hash(HashAlgorithm::Md5, arg)?,
            "XCRC" => x_hash(HashAlgorithm::Crc32, arg)?,
            "MD5" => Command::Md5(path(arg)?),
            "MMD5" => Command::Mmd5(path(arg)?),
            _ => return Err(ParseError::Unknown(verb)),
        };
        Ok(cmd)
    }

    /// The upper-case verb, for logs and replies (never includes arguments, so never a secret).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Acct => "ACCT",
            Command::Quit => "QUIT",
            Command::Noop => "NOOP",
            Command::Syst => "SYST",
            Command::Type(_) => "TYPE",
            Command::Mode(_) => "MODE",
            Command::Stru(_) => "STRU",
            Command::Pwd => "PWD",
            Command::Cwd(_) => "CWD",
            Command::Cdup => "CDUP",
            Command::Mkd(_) => "MKD",
            Command::Rmd(_) => "RMD",
            Command::Dele(_) => "DELE",
            Command::Rnfr(_) => "RNFR",
            Command::Rnto(_) => "RNTO",
            Command::List(_) => "LIST",
            Command::Nlst(_) => "NLST",
            Command::Retr(_) => "RETR",
            Command::Stor(_) => "STOR",
            Command::Appe(_) => "APPE",
            Command::Stou => "STOU",
            Command::Pasv => "PASV",
            Command::Port(_) => "PORT",
            Command::Rest(_) => "REST",
            Command::Abor => "ABOR",
            Command::Stat(_) => "STAT",
            Command::Help(_) => "HELP",
            Command::Allo => "ALLO",
            Command::Site(_) => "SITE",
            Command::Feat => "FEAT",
            Command::Opts(_) => "OPTS",
            Command::Epsv(_) => "EPSV",
            Command::Eprt(_) => "EPRT",
            Command::Size(_) => "SIZE",
            Command::Mdtm(_) => "MDTM",
            Command::Mlst(_) => "MLST",
            Command::Mlsd(_) => "MLSD",
            Command::Auth(_) => "AUTH",
            Command::Pbsz(_) => "PBSZ",
            Command::Prot(_) => "PROT",
            Command::Ccc => "CCC",
            Command::Hash(_) => "HASH",
            Command::Rang(..) => "RANG",
            Command::XHash { algorithm, .. } => match algorithm {
                HashAlgorithm::Sha256 => "XSHA256",
                HashAlgorithm::Sha512 => "XSHA512",
                HashAlgorithm::Sha1 => "XSHA1",
                HashAlgorithm::Md5 => "XMD5",
                HashAlgorithm::Crc32 => "XCRC",
            },
            Command::Md5(_) => "MD5",
            Command::Mmd5(_) => "MMD5",
        }
    }
}

fn no_arg(arg: &str, cmd: Command) -> Result<Command, ParseError> {
    if arg.trim().is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::BadArgument("this command takes no argument"))
    }
}

fn required(arg: &str, why: &'static str) -> Result<String, ParseError> {
    if arg.trim().is_empty() {
        Err(ParseError::BadArgument(why))
    } else {
        Ok(arg.to_string())
    }
}

fn optional(arg: &str) -> Option<String> {
    let arg = arg.trim();
    (!arg.is_empty()).then(|| arg.to_string())
}

/// A path argument: required, and free of NUL and other control characters, which no
/// legitimate client sends and which would otherwise reach the file system or the logs.
fn path(arg: &str) -> Result<String, ParseError> {
    if arg.is_empty() {
        return Err(ParseError::BadArgument("a path is required"));
    }
    if arg.chars().any(char::is_control) {
        return Err(ParseError::BadArgument(
            "control characters are not allowed in paths",
        ));
    }
    Ok(arg.to_string())
}

fn optional_path(arg: &str) -> Result<Option<String>, ParseError> {
    if arg.is_empty() {
        Ok(None)
    } else {
        path(arg).map(Some)
    }
}

/// Drops leading `ls` flags (`-a`, `-l`, `-la`, ...) that FileZilla, lftp and others add to LIST.
fn strip_ls_flags(arg: &str) -> &str {
    let mut rest = arg.trim_start();
    while let Some(flag) = rest.strip_prefix('-') {
        let end = flag.find(' ').unwrap_or(flag.len());
        if end == 0 || !flag[..end].chars().all(|c| c.is_ascii_alphabetic()) {
            break;
        }
        rest = flag[end..].trim_start();
    }
    rest
}

fn single_letter(arg: &str, why: &'static str) -> Result<char, ParseError> {
    let mut chars = arg.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c.to_ascii_uppercase()),
        _ => Err(ParseError::BadArgument(why)),
    }
}

fn parse_type(arg: &str) -> Result<TransferType, ParseError> {
    let mut words = arg.split_whitespace();
    let kind = words.next().map(str::to_ascii_uppercase);
    let param = words.next().map(str::to_ascii_uppercase);
    if words.next().is_some() {
        return Err(ParseError::BadArgument("TYPE takes at most two parameters"));
    }
    match (kind.as_deref(), param.as_deref()) {
        (Some("A"), None | Some("N")) => Ok(TransferType::Ascii),
        (Some("I"), None) | (Some("L"), Some("8")) => Ok(TransferType::Image),
        (Some("A" | "E"), Some("T" | "C")) | (Some("E"), _) | (Some("L"), Some(_)) => Err(
            ParseError::Unsupported("only TYPE A, A N, I and L 8 are supported"),
        ),
        _ => Err(ParseError::BadArgument("TYPE needs A or I")),
    }
}

/// `PORT h1,h2,h3,h4,p1,p2` (RFC 959 4.1.2).
fn parse_port(arg: &str) -> Result<SocketAddrV4, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("PORT needs h1,h2,h3,h4,p1,p2");
    let nums: Vec<u8> = arg
        .trim()
        .split(',')
        .map(|n| n.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| BAD)?;
    let [a, b, c, d, p1, p2] = nums[..] else {
        return Err(BAD);
    };
    Ok(SocketAddrV4::new(
        Ipv4Addr::new(a, b, c, d),
        u16::from_be_bytes([p1, p2]),
    ))
}

/// `EPRT |proto|addr|port|` with any printable delimiter (RFC 2428 section 2).
fn parse_eprt(arg: &str) -> Result<SocketAddr, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("EPRT needs |1|addr|port| or |2|addr|port|");
    let arg = arg.trim();
    let delim = arg.chars().next().ok_or(BAD)?;
    if !(33..=126).contains(&(delim as u32)) {
        return Err(BAD);
    }
    let fields: Vec<&str> = arg.split(delim).collect();
    let ["", proto, addr, port, ""] = fields[..] else {
        return Err(BAD);
    };
    let ip: IpAddr = match proto {
        "1" => IpAddr::V4(addr.parse().map_err(|_| BAD)?),
        "2" => IpAddr::V6(addr.parse().map_err(|_| BAD)?),
        _ => return Err(ParseError::NetworkProtocol),
    };
    let port: u16 = port.parse().map_err(|_| BAD)?;
    Ok(SocketAddr::new(ip, port))
}

fn parse_epsv(arg: &str) -> Result<EpsvArg, ParseError> {
    match arg.trim().to_ascii_uppercase().as_str() {
        "" | "1" | "2" => Ok(EpsvArg::Open),
        "ALL" => Ok(EpsvArg::All),
        _ => Err(ParseError::NetworkProtocol),
    }
}

/// `RANG start end` (draft-bryan-ftp-range): two offsets, start <= end, or `1 0` to reset.
fn parse_rang(arg: &str) -> Result<Command, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("RANG needs a start and an end offset");
    let mut words = arg.split_whitespace();
    let (Some(start), Some(end), None) = (words.next(), words.next(), words.next()) else {
        return Err(BAD);
    };
    let (start, end) = (
        parse_offset(start).map_err(|_| BAD)?,
        parse_offset(end).map_err(|_| BAD)?,
    );
    if start > end && (start, end) != (1, 0) {
        return Err(ParseError::BadArgument("RANG start is beyond its end"));
    }
    Ok(Command::Rang(start, end))
}

/// `XSHA256 path [start end]`: the name may contain spaces, so the offsets are taken from
/// the end only when both are numbers.
fn x_hash(algorithm: HashAlgorithm, arg: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = arg.rsplitn(3, ' ').collect();
    if let [end, start, name] = words[..]
        && let (Ok(start), Ok(end)) = (parse_offset(start), parse_offset(end))
    {
        if start > end {
            return Err(ParseError::BadArgument(
                "start offset is beyond the end offset",
            ));
        }
        return Ok(Command::XHash {
            algorithm,
            path: path(name)?,
            range: Some((start, end)),
        });
    }
    Ok(Command::XHash {
        algorithm,
        path: path(arg)?,
        range: None,
    })
}

/// A REST offset: decimal digits only, fitting in u64 (no sign, no overflow).
fn parse_offset(arg: &str) -> Result<u64, ParseError> {
    let arg = arg.trim();
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadArgument(
            "REST needs a non-negative decimal offset",
        ));
    }
    arg.parse()
        .map_err(|_| ParseError::BadArgument("REST offset is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, ParseError> {
        Command::parse(line)
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse("noop"), Ok(Command::Noop));
        assert_eq!(parse("NoOp"), Ok(Command::Noop));
        assert_eq!(parse("user bob"), Ok(Command::User("bob".into())));
    }

    #[test]
    fn path_arguments_keep_inner_and_trailing_spaces() {
        assert_eq!(
            parse("RETR my file.txt"),
            Ok(Command::Retr("my file.txt".into()))
        );
        assert_eq!(parse("STOR  two"), Ok(Command::Stor(" two".into())));
    }

    #[test]
    fn x_variants_alias_the_rfc959_commands() {
        assert_eq!(parse("XPWD"), Ok(Command::Pwd));
        assert_eq!(parse("XCWD a"), Ok(Command::Cwd("a".into())));
        assert_eq!(parse("XCUP"), Ok(Command::Cdup));
        assert_eq!(parse("XMKD a"), Ok(Command::Mkd("a".into())));
        assert_eq!(parse("XRMD a"), Ok(Command::Rmd("a".into())));
    }

    #[test]
    fn unknown_verbs_are_502_and_blank_lines_500() {
        assert_eq!(parse("FOO bar").unwrap_err().reply_code(), 502);
        assert_eq!(parse("").unwrap_err().reply_code(), 500);
        assert_eq!(parse("   ").unwrap_err().reply_code(), 500);
    }

    #[test]
    fn missing_path_is_501() {
        for verb in [
            "CWD", "RETR", "STOR", "DELE", "MKD", "RMD", "RNFR", "RNTO", "SIZE", "MDTM",
        ] {
            assert_eq!(parse(verb).unwrap_err().reply_code(), 501, "{verb}");
        }
    }

    #[test]
    fn control_characters_in_paths_are_501() {
        assert_eq!(parse("RETR a\0b").unwrap_err().reply_code(), 501);
        assert_eq!(parse("CWD a\rb").unwrap_err().reply_code(), 501);
        assert_eq!(parse("LIST \u{1b}[2J").unwrap_err().reply_code(), 501);
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let cmd = parse("PASS hunter2").unwrap();
        assert_eq!(cmd, Command::Pass(Password::new("hunter2")));
        assert!(!format!("{cmd:?}").contains("hunter2"));
    }

    #[test]
    fn empty_password_is_allowed() {
        assert_eq!(parse("PASS"), Ok(Command::Pass(Password::new(""))));
    }

    #[test]
    fn type_accepts_a_i_and_their_long_forms() {
        assert_eq!(parse("TYPE A"), Ok(Command::Type(TransferType::Ascii)));
        assert_eq!(parse("type a n"), Ok(Command::Type(TransferType::Ascii)));
        assert_eq!(parse("TYPE I"), Ok(Command::Type(TransferType::Image)));
        assert_eq!(parse("TYPE L 8"), Ok(Command::Type(TransferType::Image)));
        assert_eq!(parse("TYPE E").unwrap_err().reply_code(), 504);
        assert_eq!(parse("TYPE X").unwrap_err().reply_code(), 501);
        assert_eq!(parse("TYPE").unwrap_err().reply_code(), 501);
    }

    #[test]
    fn list_flags_are_dropped_but_names_kept() {
        assert_eq!(parse("LIST"), Ok(Command::List(None)));
        assert_eq!(parse("LIST -la"), Ok(Command::List(None)));
        assert_eq!(
            parse("LIST -a -l sub"),
            Ok(Command::List(Some("sub".into())))
        );
        assert_eq!(
            parse("LIST sub dir"),
            Ok(Command::List(Some("sub dir".into())))
        );
        assert_eq!(
            parse("NLST -1x9 d"),
            Ok(Command::Nlst(Some("-1x9 d".into())))
        );
    }

    #[test]
    fn port_parses_six_numbers() {
        let expected = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4 * 256 + 1);
        assert_eq!(parse("PORT 127,0,0,1,4,1"), Ok(Command::Port(expected)));
        for bad in [
            "PORT",
            "PORT 1,2,3,4,5",
            "PORT 1,2,3,4,5,256",
            "PORT a,b,c,d,e,f",
            "PORT 1,2,3,4,5,6,7",
        ] {
            assert_eq!(parse(bad).unwrap_err().reply_code(), 501, "{bad}");
        }
    }

    #[test]
    fn eprt_parses_ipv4_and_ipv6_with_any_delimiter() {
        assert_eq!(
            parse("EPRT |1|127.0.0.1|6275|"),
            Ok(Command::Eprt("127.0.0.1:6275".parse().unwrap()))
        );
        assert_eq!(
            parse("EPRT !2!::1!5282!"),
            Ok(Command::Eprt("[::1]:5282".parse().unwrap()))
        );
        assert_eq!(parse("EPRT |3|x|1|").unwrap_err().reply_code(), 522);
        for bad in [
            "EPRT",
            "EPRT |1|::1|5|",
            "EPRT |1|1.2.3.4|70000|",
            "EPRT |1|1.2.3.4|5",
        ] {
            assert_eq!(parse(bad).unwrap_err().reply_code(), 501, "{bad}");
        }
    }

    #[test]
    fn epsv_accepts_nothing_one_two_and_all() {
        assert_eq!(parse("EPSV"), Ok(Command::Epsv(EpsvArg::Open)));
        assert_eq!(parse("EPSV 2"), Ok(Command::Epsv(EpsvArg::Open)));
        assert_eq!(parse("epsv all"), Ok(Command::Epsv(EpsvArg::All)));
        assert_eq!(parse("EPSV 9").unwrap_err().reply_code(), 522);
    }

    #[test]
    fn rest_accepts_u64_and_rejects_sign_garbage_and_overflow() {
        assert_eq!(parse("REST 0"), Ok(Command::Rest(0)));
        assert_eq!(
            parse("REST 18446744073709551615"),
            Ok(Command::Rest(u64::MAX))
        );
        for bad in [
            "REST",
            "REST -1",
            "REST +1",
            "REST 1e3",
            "REST 18446744073709551616",
        ] {
            assert_eq!(parse(bad).unwrap_err().reply_code(), 501, "{bad}");
        }
    }

    #[test]
    fn hash_commands_parse_names_and_ranges() {
        assert_eq!(parse("HASH a b"), Ok(Command::Hash("a b".into())));
        assert_eq!(parse("RANG 5 10"), Ok(Command::Rang(5, 10)));
        assert_eq!(parse("RANG 1 0"), Ok(Command::Rang(1, 0)));
        assert_eq!(parse("RANG 9 3").unwrap_err().reply_code(), 501);
        assert_eq!(parse("RANG 1").unwrap_err().reply_code(), 501);
        let sha = HashAlgorithm::Sha256;
        assert_eq!(
            parse("XSHA256 my file 0 99"),
            Ok(Command::XHash {
                algorithm: sha,
                path: "my file".into(),
                range: Some((0, 99))
            })
        );
        assert_eq!(
            parse("XSHA256 my file 7"),
            Ok(Command::XHash {
                algorithm: sha,
                path: "my file 7".into(),
                range: None
            })
        );
        assert_eq!(parse("XCRC f 9 1").unwrap_err().reply_code(), 501);
        assert_eq!(parse("XMD5").unwrap_err().reply_code(), 501);
        assert_eq!(parse("MD5 f"), Ok(Command::Md5("f".into())));
        assert_eq!(
            HashAlgorithm::from_name("sha-512"),
            Some(HashAlgorithm::Sha512)
        );
        assert_eq!(HashAlgorithm::from_name("SHA-3"), None);
    }

    #[test]
    fn mode_and_stru_take_one_letter() {
        assert_eq!(parse("MODE s"), Ok(Command::Mode('S')));
        assert_eq!(parse("STRU F"), Ok(Command::Stru('F')));
        assert_eq!(parse("MODE").unwrap_err().reply_code(), 501);
    }

    #[test]
    fn commands_without_arguments_reject_extra_words() {
        assert_eq!(parse("PWD x").unwrap_err().reply_code(), 501);
        assert_eq!(parse("PASV x").unwrap_err().reply_code(), 501);
    }
}
