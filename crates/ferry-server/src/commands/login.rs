//! USER and PASS (RFC 959 4.1.1): argon2id verification off the async threads, the same work
//! and delay for unknown users and wrong passwords, and 421 after too many failures on one
//! connection or from one address.

use std::io;
use std::sync::Arc;

use ferry_proto::Password;
use tracing::{info, warn};

use crate::quota::QuotaStorage;
use crate::session::{Flow, LoggedIn, Login, Session};
use crate::storage::Storage;
use crate::storage::VirtualPath;

pub(super) async fn user(s: &mut Session, name: String) -> io::Result<()> {
    if s.is_logged_in() {
        return s.reply(530, "Already logged in; cannot change user").await;
    }
    // The server-wide rule is the same for every name. An account's own rule is checked at
    // PASS, after the password: answering it here would tell a prober which names exist.
    if !s.control_is_tls() && s.shared.config.require_tls {
        return s
            .reply(530, "TLS required: use AUTH TLS before logging in")
            .await;
    }
    s.login = Login::AwaitingPass(name);
    s.reply(331, "Password required").await
}

pub(super) async fn pass(s: &mut Session, password: Password) -> io::Result<Flow> {
    let name = match std::mem::replace(&mut s.login, Login::AwaitingUser) {
        Login::AwaitingPass(name) => name,
        Login::AwaitingUser => {
            s.reply(503, "Login with USER first").await?;
            return Ok(Flow::Continue);
        }
        logged_in @ Login::LoggedIn(_) => {
            s.login = logged_in;
            s.reply(230, "Already logged in").await?;
            return Ok(Flow::Continue);
        }
    };
    if s.shared.login_throttle.is_blocked(s.peer.ip()) {
        warn!(user = %name, peer = %s.peer, "login refused: too many failures from this address");
        s.shared.metrics.login(false);
        tokio::time::sleep(s.shared.config.login_fail_delay).await;
        s.reply(
            421,
            "Too many failed logins from your address; try again later",
        )
        .await?;
        return Ok(Flow::Close);
    }
    let users = Arc::clone(&s.shared.users);
    let found = match users.find(&name).await {
        Ok(found) => found,
        Err(err) => {
            tracing::error!(user = %name, error = &err as &dyn std::error::Error, "cannot look up the account");
            s.reply(421, "Account database unavailable, try again later")
                .await?;
            return Ok(Flow::Close);
        }
    };
    let cached = found
        .as_ref()
        .and_then(|found| users.verified_recently(found, &password));
    let verified = if cached.is_some() {
        "cache"
    } else {
        "argon2id"
    };
    let account = if cached.is_some() {
        cached
    } else {
        s.shared
            .password_checks
            .run(move || users.verify(found, &password))
            .await
            .flatten()
    };
    let Some(account) = account else {
        return failed(s, &name).await;
    };
    if account.require_tls && !s.control_is_tls() {
        warn!(user = %name, peer = %s.peer, "login refused: the account requires TLS");
        s.shared.metrics.login(false);
        s.reply(530, "TLS required for this account: use AUTH TLS, and change the password if it crossed the network in clear")
            .await?;
        return Ok(Flow::Continue);
    }
    let (home, shared, user) = (account.home.clone(), Arc::clone(&s.shared), name.clone());
    let storage: Arc<dyn Storage> = match tokio::task::spawn_blocking(move || {
        shared.config.storage.open(&user, &home, &shared.homes)
    })
    .await
    {
        Ok(Ok(storage)) => storage,
        Ok(Err(err)) => {
            tracing::error!(user = %name, home = %account.home.display(), %err, "cannot open home directory");
            s.reply(421, "Home directory unavailable").await?;
            return Ok(Flow::Close);
        }
        Err(err) => return Err(io::Error::other(err)),
    };
    let quota = match s
        .shared
        .quotas
        .for_user(&name, account.limits, storage.as_ref())
        .await
    {
        Ok(quota) => quota,
        Err(err) => {
            tracing::error!(user = %name, %err, "cannot determine quota usage");
            s.reply(421, "Quota usage unavailable").await?;
            return Ok(Flow::Close);
        }
    };
    let storage = Arc::new(QuotaStorage::new(storage, Arc::clone(&quota)));
    info!(user = %name, peer = %s.peer, read_only = account.read_only, verified, "login");
    s.shared.metrics.login(true);
    s.login = Login::LoggedIn(LoggedIn {
        account,
        storage,
        quota,
    });
    s.cwd = VirtualPath::root();
    s.reply(230, "Login successful").await?;
    Ok(Flow::Continue)
}

async fn failed(s: &mut Session, name: &str) -> io::Result<Flow> {
    s.failed_logins += 1;
    s.shared.login_throttle.record_failure(s.peer.ip());
    s.shared.metrics.login(false);
    warn!(user = %name, peer = %s.peer, attempt = s.failed_logins, "login failed");
    tokio::time::sleep(s.shared.config.login_fail_delay).await;
    if s.failed_logins >= s.shared.config.max_login_failures {
        s.reply(421, "Too many failed logins, closing connection")
            .await?;
        return Ok(Flow::Close);
    }
    s.reply(530, "Login incorrect").await?;
    Ok(Flow::Continue)
}
