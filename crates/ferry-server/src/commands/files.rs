//! File and directory commands: MKD RMD DELE RNFR RNTO (RFC 959), SIZE MDTM MLST (RFC 3659).

use std::io;

use ferry_proto::Reply;
use tracing::info;

use super::{quote_path, storage, writable_storage};
use crate::listing::{mlsx_line, timeval};
use crate::session::Session;
use crate::storage::VirtualPath;

pub(super) async fn mkd(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = writable_storage(s).await? else {
        return Ok(());
    };
    let path = s.resolve(arg);
    match storage.create_dir(&path).await {
        Ok(()) => {
            info!(user = s.user_name(), peer = %s.peer, %path, "mkdir");
            s.reply(257, format!("{} created", quote_path(&path))).await
        }
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn rmd(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = writable_storage(s).await? else {
        return Ok(());
    };
    let path = s.resolve(arg);
    if s.cwd.as_str().starts_with(path.as_str())
        && (s.cwd == path || s.cwd.as_str()[path.as_str().len()..].starts_with('/'))
    {
        return s
            .reply(550, "Cannot remove the current directory or its parent")
            .await;
    }
    match storage.remove_dir(&path).await {
        Ok(()) => {
            info!(user = s.user_name(), peer = %s.peer, %path, "rmdir");
            s.reply(250, "Directory removed").await
        }
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn dele(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = writable_storage(s).await? else {
        return Ok(());
    };
    let path = s.resolve(arg);
    match storage.remove_file(&path).await {
        Ok(()) => {
            info!(user = s.user_name(), peer = %s.peer, %path, "delete");
            s.reply(250, "File deleted").await
        }
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn rnfr(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = writable_storage(s).await? else {
        return Ok(());
    };
    let path = s.resolve(arg);
    if path.is_root() {
        return s.reply(550, "Cannot rename the home directory").await;
    }
    match storage.metadata(&path).await {
        Ok(_) => {
            s.rename_from = Some(path);
            s.reply(350, "Ready for RNTO").await
        }
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn rnto(s: &mut Session, from: Option<VirtualPath>, arg: &str) -> io::Result<()> {
    let Some(from) = from else {
        return s.reply(503, "Send RNFR first").await;
    };
    let Some(storage) = writable_storage(s).await? else {
        return Ok(());
    };
    let to = s.resolve(arg);
    match storage.rename(&from, &to).await {
        Ok(()) => {
            info!(user = s.user_name(), peer = %s.peer, %from, %to, "rename");
            s.reply(250, "Rename successful").await
        }
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn size(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    match storage.metadata(&s.resolve(arg)).await {
        Ok(meta) if meta.is_dir => s.reply(550, "Not a regular file").await,
        Ok(meta) => s.reply(213, meta.len.to_string()).await,
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn mdtm(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    match storage.metadata(&s.resolve(arg)).await {
        Ok(meta) if meta.is_dir => s.reply(550, "Not a regular file").await,
        Ok(meta) => s.reply(213, timeval(meta.modified)).await,
        Err(err) => s.storage_error(err).await,
    }
}

pub(super) async fn mlst(s: &mut Session, arg: Option<&str>) -> io::Result<()> {
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    let path = arg.map_or_else(|| s.cwd.clone(), |a| s.resolve(a));
    match storage.metadata(&path).await {
        Ok(meta) => {
            let fact_line = mlsx_line(path.as_str(), &meta, s.writable(), s.mlst_facts);
            let lines = vec![format!("Listing {path}"), fact_line, "End".to_string()];
            s.send(Reply::multi(250, lines)).await
        }
        Err(err) => s.storage_error(err).await,
    }
}
