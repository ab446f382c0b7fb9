//! Virtual paths: what the client sees. Resolution is purely lexical and clamps `..` at the
//! root, so no string a client sends names anything above its home; the backend then refuses
//! symlinks that lead out (defence in depth, and the only defence against symlinks).

use std::fmt;

/// A normalized absolute virtual path: starts with `/`, no `.`/`..`/empty segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualPath(String);

impl VirtualPath {
    /// The home directory itself.
    pub fn root() -> Self {
        VirtualPath("/".to_string())
    }

    /// True for the home directory itself.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The path as the client sees it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to the home, for backends: "." for the root, else "a/b".
    pub fn relative(&self) -> &str {
        if self.is_root() { "." } else { &self.0[1..] }
    }

    /// The last segment ("" for the root).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The parent directory (the root is its own parent).
    pub fn parent(&self) -> VirtualPath {
        match self.0.rfind('/') {
            Some(0) | None => VirtualPath::root(),
            Some(i) => VirtualPath(self.0[..i].to_string()),
        }
    }

    /// A child of this directory; `name` must be a single segment.
    pub fn join(&self, name: &str) -> VirtualPath {
        resolve(self, name)
    }
}

impl fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves what a client typed against its current directory.
pub fn resolve(cwd: &VirtualPath, arg: &str) -> VirtualPath {
    let mut parts: Vec<&str> = if arg.starts_with('/') {
        Vec::new()
    } else {
        cwd.0.split('/').filter(|s| !s.is_empty()).collect()
    };
    for segment in arg.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    VirtualPath(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cwd: &str, arg: &str) -> String {
        let cwd = resolve(&VirtualPath::root(), cwd);
        resolve(&cwd, arg).as_str().to_string()
    }

    #[test]
    fn relative_paths_join_the_cwd() {
        assert_eq!(at("/a", "b/c"), "/a/b/c");
        assert_eq!(at("/", "x"), "/x");
    }

    #[test]
    fn absolute_paths_start_at_the_home() {
        assert_eq!(at("/a/b", "/etc/passwd"), "/etc/passwd");
    }

    #[test]
    fn dot_dot_clamps_at_the_root() {
        assert_eq!(at("/", ".."), "/");
        assert_eq!(at("/a", "../../../../etc/passwd"), "/etc/passwd");
        assert_eq!(at("/a/b", "../c"), "/a/c");
        assert_eq!(at("/", "/../.."), "/");
    }

    #[test]
    fn dots_and_repeated_slashes_are_dropped() {
        assert_eq!(at("/", "./a//b/./"), "/a/b");
    }

    #[test]
    fn backslashes_are_ordinary_name_bytes() {
        assert_eq!(at("/", "..\\..\\etc"), "/..\\..\\etc");
    }

    #[test]
    fn relative_form_for_backends() {
        assert_eq!(VirtualPath::root().relative(), ".");
        assert_eq!(at("/", "a/b").len(), 4);
        assert_eq!(resolve(&VirtualPath::root(), "a/b").relative(), "a/b");
    }

    #[test]
    fn parent_and_file_name() {
        let p = resolve(&VirtualPath::root(), "/a/b");
        assert_eq!(p.parent().as_str(), "/a");
        assert_eq!(p.parent().parent().as_str(), "/");
        assert_eq!(p.file_name(), "b");
        assert!(VirtualPath::root().parent().is_root());
    }
}
