//! FTP URLs as curl, lftp and FileZilla write them: `ftp://` (plain, or explicit TLS when
//! asked), `ftpes://` (explicit TLS, FileZilla's name) and `ftps://` (implicit TLS, port 990).
//! The path is relative to the login directory, as in curl: `ftp://h/dir/f` names `dir/f`,
//! `ftp://h//abs/f` names `/abs/f`.

use url::Url;

/// How the control connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain FTP.
    Plain,
    /// AUTH TLS on a plain connection (RFC 4217).
    Explicit,
    /// TLS from the first byte (port 990).
    Implicit,
}

/// A server, the credentials in the URL, and a path on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Protection of the control connection.
    pub security: Security,
    /// Host name or address (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User from the URL, percent-decoded.
    pub user: Option<String>,
    /// Password from the URL, percent-decoded.
    pub password: Option<String>,
    /// Path relative to the login directory ("" for the login directory itself).
    pub path: String,
}

/// A URL that is not an FTP URL ferry understands.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl Endpoint {
    /// Parses `text`; `explicit_tls` upgrades a plain `ftp://` URL to AUTH TLS (`--tls`).
    pub fn parse(text: &str, explicit_tls: bool) -> Result<Endpoint, UrlError> {
        let url = Url::parse(text).map_err(|e| UrlError(format!("{text}: {e}")))?;
        let (security, default_port) = match url.scheme() {
            "ftp" if explicit_tls => (Security::Explicit, 21),
            "ftp" => (Security::Plain, 21),
            "ftpes" => (Security::Explicit, 21),
            "ftps" => (Security::Implicit, 990),
            other => {
                return Err(UrlError(format!(
                    "{text}: unsupported scheme {other}:// (use ftp, ftpes or ftps)"
                )));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| UrlError(format!("{text}: no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| -> Result<String, UrlError> {
            percent_decode(s).ok_or_else(|| UrlError(format!("{text}: bad percent-encoding")))
        };
        let user = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let password = url.password().map(decode).transpose()?;
        let raw_path = url.path();
        let path = decode(raw_path.strip_prefix('/').unwrap_or(raw_path))?;
        Ok(Endpoint {
            security,
            host,
            port: url.port().unwrap_or(default_port),
            user,
            password,
            path,
        })
    }

    /// The same server with another path.
    pub fn with_path(&self, path: impl Into<String>) -> Endpoint {
        Endpoint {
            path: path.into(),
            ..self.clone()
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_choose_the_protection_and_default_port() {
        let e = Endpoint::parse("ftp://h/f", false).unwrap();
        assert_eq!((e.security, e.port), (Security::Plain, 21));
        assert_eq!(
            Endpoint::parse("ftp://h/f", true).unwrap().security,
            Security::Explicit
        );
        assert_eq!(
            Endpoint::parse("ftpes://h/f", false).unwrap().security,
            Security::Explicit
        );
        let e = Endpoint::parse("ftps://h/f", false).unwrap();
        assert_eq!((e.security, e.port), (Security::Implicit, 990));
        assert!(Endpoint::parse("http://h/f", false).is_err());
    }

    #[test]
    fn credentials_and_paths_are_percent_decoded() {
        let e = Endpoint::parse("ftp://us%40er:p%3Ass@127.0.0.1:2121/a%20b/c.txt", false).unwrap();
        assert_eq!(e.user.as_deref(), Some("us@er"));
        assert_eq!(e.password.as_deref(), Some("p:ss"));
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2121));
        assert_eq!(e.path, "a b/c.txt");
    }

    #[test]
    fn paths_are_relative_to_the_login_directory_unless_doubled() {
        assert_eq!(Endpoint::parse("ftp://h/", false).unwrap().path, "");
        assert_eq!(Endpoint::parse("ftp://h", false).unwrap().path, "");
        assert_eq!(
            Endpoint::parse("ftp://h//etc/x", false).unwrap().path,
            "/etc/x"
        );
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        let e = Endpoint::parse("ftp://[::1]:21/", false).unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(Endpoint::parse("ftp://u@h/", false).unwrap().password, None);
    }
}
