//! `storage::resolve`, the lexical step that keeps every client path inside the home.
//!
//! The input is `cwd NUL arg NUL other` (missing parts are empty). The working directory is
//! built with `resolve` from the root, as the session builds it with CWD.
//!
//! Asserts: the result is absolute and normalized (starts with `/`, no empty, `.` or `..`
//! segments, no trailing `/`); every segment comes from the cwd or the argument, so nothing is
//! invented and no NUL appears unless one was typed; resolving the result again from any
//! directory gives it back; `relative()` is `.` for the root and otherwise the path without its
//! `/`, never climbing; `parent()` and `file_name()` put the path back together.

#![no_main]

use ferry_server::storage::{VirtualPath, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let (cwd_arg, arg, other) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let root = VirtualPath::root();
    let cwd = resolve(&root, cwd_arg);
    check_normalized(&cwd);
    let path = resolve(&cwd, arg);
    check_normalized(&path);

    for segment in segments(&path) {
        assert!(
            cwd_arg.split('/').any(|s| s == segment) || arg.split('/').any(|s| s == segment),
            "segment {segment:?} of {path} came from neither {cwd_arg:?} nor {arg:?}"
        );
    }
    if !cwd_arg.contains('\0') && !arg.contains('\0') {
        assert!(!path.as_str().contains('\0'));
    }

    let elsewhere = resolve(&root, other);
    for from in [&root, &cwd, &path, &elsewhere] {
        assert_eq!(
            resolve(from, path.as_str()),
            path,
            "not absolute from {from}"
        );
    }
    assert_eq!(resolve(&path, "."), path);
    assert_eq!(resolve(&path, ""), path);
    if arg.starts_with('/') {
        assert_eq!(
            resolve(&elsewhere, arg),
            path,
            "absolute argument depends on cwd"
        );
    }

    let relative = path.relative();
    if path.is_root() {
        assert_eq!(relative, ".");
        assert_eq!(path.file_name(), "");
    } else {
        assert!(!relative.starts_with('/'));
        assert!(
            relative
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..")
        );
        assert_eq!(format!("/{relative}"), path.as_str());
        let name = path.file_name();
        assert!(!name.is_empty() && !name.contains('/'));
        assert_eq!(path.parent().join(name), path);
    }
    assert_eq!(resolve(&path, ".."), path.parent());
    check_normalized(&path.parent());
});

fn segments(path: &VirtualPath) -> impl Iterator<Item = &str> {
    path.as_str().split('/').skip(1).filter(|s| !s.is_empty())
}

fn check_normalized(path: &VirtualPath) {
    let s = path.as_str();
    assert!(s.starts_with('/'), "{s:?} is not absolute");
    if s != "/" {
        assert!(
            s[1..]
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
            "{s:?} is not normalized"
        );
    }
}
