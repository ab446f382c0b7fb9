//! PWD, CWD and CDUP (RFC 959 4.1.1, 4.1.3): the current directory is virtual, "/" is home.

use std::io;

use super::quote_path;
use crate::session::Session;

pub(super) async fn pwd(s: &mut Session) -> io::Result<()> {
    let text = format!("{} is the current directory", quote_path(&s.cwd));
    s.reply(257, text).await
}

pub(super) async fn cwd(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = super::storage(s).await? else {
        return Ok(());
    };
    let target = s.resolve(arg);
    match storage.metadata(&target).await {
        Ok(meta) if meta.is_dir => {
            let text = format!("Directory changed to {target}");
            s.cwd = target;
            s.reply(250, text).await
        }
        Ok(_) => s.reply(550, "Not a directory").await,
        Err(err) => s.storage_error(err).await,
    }
}
