//! Command handlers, grouped by topic. Each handler answers with exactly one final reply (plus
//! a 150 preliminary for transfers); none can panic on client input.

mod files;
mod hash;
mod info;
mod login;
mod nav;
mod security;
mod transfer;

use std::io;
use std::sync::Arc;

use ferry_proto::Command;

use crate::session::{Flow, Session};
use crate::storage::{Storage, VirtualPath};

/// Runs one parsed command. `rename_from` is the RNFR path when the previous command was RNFR.
pub(crate) async fn run(
    s: &mut Session,
    cmd: Command,
    rename_from: Option<VirtualPath>,
) -> io::Result<Flow> {
    match cmd {
        Command::User(name) => login::user(s, name).await?,
        Command::Pass(password) => return login::pass(s, password).await,
        Command::Acct => s.reply(202, "ACCT not needed").await?,
        Command::Quit => {
            s.reply(221, "Goodbye").await?;
            return Ok(Flow::Close);
        }
        Command::Noop => s.reply(200, "NOOP ok").await?,
        Command::Syst => s.reply(215, "UNIX Type: L8").await?,
        Command::Type(t) => info::transfer_type(s, t).await?,
        Command::Mode(m) => info::mode(s, m).await?,
        Command::Stru(st) => info::stru(s, st).await?,
        Command::Allo => s.reply(202, "ALLO not needed").await?,
        Command::Feat => info::feat(s).await?,
        Command::Opts(opt) => info::opts(s, &opt).await?,
        Command::Help(topic) => info::help(s, topic.as_deref()).await?,
        Command::Site(sub) => info::site(s, &sub).await?,
        Command::Stat(None) => info::status(s).await?,
        Command::Stat(Some(path)) => transfer::stat_path(s, &path).await?,
        Command::Auth(mechanism) => security::auth(s, &mechanism).await?,
        Command::Pbsz(size) => security::pbsz(s, &size).await?,
        Command::Prot(level) => security::prot(s, &level).await?,
        Command::Ccc => security::ccc(s).await?,
        Command::Pwd => nav::pwd(s).await?,
        Command::Cwd(path) => nav::cwd(s, &path).await?,
        Command::Cdup => nav::cwd(s, "..").await?,
        Command::Mkd(path) => files::mkd(s, &path).await?,
        Command::Rmd(path) => files::rmd(s, &path).await?,
        Command::Dele(path) => files::dele(s, &path).await?,
        Command::Rnfr(path) => files::rnfr(s, &path).await?,
        Command::Rnto(path) => files::rnto(s, rename_from, &path).await?,
        Command::Size(path) => files::size(s, &path).await?,
        Command::Mdtm(path) => files::mdtm(s, &path).await?,
        Command::Mlst(path) => files::mlst(s, path.as_deref()).await?,
        Command::Rest(offset) => {
            s.rest = Some(offset);
            s.reply(350, format!("Restarting at {offset}. Send STOR or RETR"))
                .await?;
        }
        Command::Pasv => transfer::pasv(s).await?,
        Command::Epsv(arg) => transfer::epsv(s, arg).await?,
        Command::Port(addr) => transfer::port(s, addr.into()).await?,
        Command::Eprt(addr) => transfer::port(s, addr).await?,
        Command::Abor => {
            s.data = None;
            s.reply(226, "No transfer to abort").await?;
        }
        Command::Retr(path) => transfer::retr(s, &path).await?,
        Command::Stor(path) => transfer::stor(s, &path).await?,
        Command::Appe(path) => transfer::appe(s, &path).await?,
        Command::Stou => transfer::stou(s).await?,
        Command::List(path) => transfer::list(s, path.as_deref()).await?,
        Command::Nlst(path) => transfer::nlst(s, path.as_deref()).await?,
        Command::Mlsd(path) => transfer::mlsd(s, path.as_deref()).await?,
        Command::Hash(path) => hash::hash(s, &path).await?,
        Command::Rang(start, end) => hash::rang(s, start, end).await?,
        Command::XHash {
            algorithm,
            path,
            range,
        } => hash::xhash(s, algorithm, &path, range).await?,
        Command::Md5(path) => hash::md5(s, &path).await?,
        Command::Mmd5(paths) => hash::mmd5(s, &paths).await?,
    }
    Ok(Flow::Continue)
}

/// Quotes a path for a 257 reply: surrounded by `"`, inner quotes doubled (RFC 959 appendix II).
fn quote_path(path: &VirtualPath) -> String {
    format!("\"{}\"", path.as_str().replace('"', "\"\""))
}

/// The user's storage. The login gate in `dispatch` guarantees one; this answers 530 if not,
/// so a handler never leaves the client without a reply.
async fn storage(s: &mut Session) -> io::Result<Option<Arc<dyn Storage>>> {
    let storage = s.storage();
    if storage.is_none() {
        s.reply(530, "Please login with USER and PASS").await?;
    }
    Ok(storage)
}

/// Storage for a command that changes files: read-only accounts get 550.
async fn writable_storage(s: &mut Session) -> io::Result<Option<Arc<dyn Storage>>> {
    if s.is_logged_in() && !s.writable() {
        s.reply(550, "Permission denied: read-only account").await?;
        return Ok(None);
    }
    storage(s).await
}
