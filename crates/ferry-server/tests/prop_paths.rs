//! Properties of path resolution and listing lines over generated input: the lexical
//! confinement every client path goes through, and the LIST/MLSD lines clients parse. The fuzz
//! targets `path_resolve` and `listing` check the same with libFuzzer.

use std::time::{Duration, SystemTime};

use ferry_server::listing::{Facts, ls_line, mlsx_line, timeval};
use ferry_server::storage::{DirEntry, Metadata, VirtualPath, resolve};
use proptest::prelude::*;

/// A client path: segments that matter to resolution (dots, empty ones from `//`, lookalikes
/// such as `...` and `..\`), joined by `/`, sometimes absolute.
fn client_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("...".to_string()),
        Just("..\\".to_string()),
        Just(" ".to_string()),
        "[a-zé]{1,3}",
        any::<String>(),
    ];
    (any::<bool>(), prop::collection::vec(segment, 0..8)).prop_map(|(absolute, segments)| {
        let joined = segments.join("/");
        if absolute {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

fn assert_normalized(path: &VirtualPath) -> Result<(), TestCaseError> {
    let s = path.as_str();
    prop_assert!(s.starts_with('/'), "{:?}", s);
    if s != "/" {
        prop_assert!(
            s[1..]
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
            "{:?}",
            s
        );
    }
    Ok(())
}

/// A modification time, reaching far past chrono's range (about 262,000 years around 1970),
/// where listings once panicked.
fn mtime() -> impl Strategy<Value = SystemTime> {
    (
        -1_000_000_000_000_000i64..1_000_000_000_000_000,
        0..1_000_000_000u32,
    )
        .prop_map(|(secs, nanos)| {
            let offset =
                Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into());
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + offset
            } else {
                SystemTime::UNIX_EPOCH - offset
            }
        })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        any::<bool>(),
        any::<u64>(),
        mtime(),
        any::<Option<u32>>(),
        any::<Option<(u64, u64)>>(),
    )
        .prop_map(|(is_dir, len, modified, mode, unique)| Metadata {
            is_dir,
            len,
            modified,
            mode,
            unique: unique.map(|(dev, ino)| format!("{dev:x}g{ino:x}")),
        })
}

/// A file name as a directory may hold it: anything but `/` and NUL, CR/LF included.
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof!["[^/\0]{1,20}", "[a-z ]{1,8}"]
}

proptest! {
    #[test]
    fn resolved_paths_are_absolute_and_normalized(cwd in client_path(), arg in client_path()) {
        let cwd = resolve(&VirtualPath::root(), &cwd);
        assert_normalized(&cwd)?;
        let path = resolve(&cwd, &arg);
        assert_normalized(&path)?;
        if !arg.contains('\0') && !cwd.as_str().contains('\0') {
            prop_assert!(!path.as_str().contains('\0'));
        }
    }

    #[test]
    fn resolving_a_resolved_path_again_from_anywhere_gives_it_back(
        cwd in client_path(),
        arg in client_path(),
        elsewhere in client_path(),
    ) {
        let root = VirtualPath::root();
        let cwd = resolve(&root, &cwd);
        let path = resolve(&cwd, &arg);
        let elsewhere = resolve(&root, &elsewhere);
        for from in [&root, &cwd, &path, &elsewhere] {
            prop_assert_eq!(&resolve(from, path.as_str()), &path);
        }
        prop_assert_eq!(&resolve(&path, "."), &path);
    }

    #[test]
    fn dot_dot_clamps_at_the_home(cwd in client_path(), ups in 0..12usize, rest in client_path()) {
        let cwd = resolve(&VirtualPath::root(), &cwd);
        let depth = cwd.as_str().split('/').filter(|s| !s.is_empty()).count();
        let climb = vec![".."; ups].join("/");
        let up = resolve(&cwd, &climb);
        let left = up.as_str().split('/').filter(|s| !s.is_empty()).count();
        prop_assert_eq!(left, depth.saturating_sub(ups));
        prop_assert!(cwd.as_str().starts_with(up.as_str()));
        let beyond = resolve(&cwd, &format!("{climb}/{}", "../".repeat(depth + 1)));
        prop_assert!(beyond.is_root());
        prop_assert_eq!(resolve(&beyond, &rest), resolve(&VirtualPath::root(), &rest));
    }

    #[test]
    fn relative_form_never_climbs_and_parts_put_the_path_back(cwd in client_path(), arg in client_path()) {
        let path = resolve(&resolve(&VirtualPath::root(), &cwd), &arg);
        let relative = path.relative();
        if path.is_root() {
            prop_assert_eq!(relative, ".");
        } else {
            prop_assert!(!relative.starts_with('/'));
            prop_assert!(relative.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            prop_assert_eq!(format!("/{relative}"), path.as_str());
            prop_assert_eq!(path.parent().join(path.file_name()), path.clone());
        }
        prop_assert_eq!(resolve(&path, ".."), path.parent());
    }

    #[test]
    fn ls_lines_are_one_line_of_eight_columns_and_the_name(
        name in file_name(),
        meta in metadata(),
        now in mtime(),
    ) {
        let entry = DirEntry { name: name.clone(), metadata: meta.clone() };
        let line = ls_line(&entry, now);
        if !name.contains(['\r', '\n']) {
            prop_assert!(!line.contains(['\r', '\n']), "{:?}", line);
        }
        let prefix = line.strip_suffix(name.as_str()).and_then(|p| p.strip_suffix(' '));
        let Some(prefix) = prefix else {
            return Err(TestCaseError::fail(format!("{line:?} does not end in the name")));
        };
        let columns: Vec<&str> = prefix.split_whitespace().collect();
        prop_assert_eq!(columns.len(), 8, "{:?}", line);
        prop_assert_eq!(columns[0].starts_with('d'), meta.is_dir);
        prop_assert_eq!(columns[0].len(), 10);
        prop_assert_eq!(&columns[1..4], &["1", "ftp", "ftp"]);
        prop_assert_eq!(columns[4], meta.len.to_string());
    }

    #[test]
    fn mlsx_lines_are_selected_facts_then_one_space_and_the_name(
        name in file_name(),
        meta in metadata(),
        writable in any::<bool>(),
        selection in prop::option::of("((type|size|modify|perm|unique|Size|x);){0,6}"),
    ) {
        let facts = selection.as_deref().map_or_else(Facts::default, Facts::select);
        let line = mlsx_line(&name, &meta, writable, facts);
        if !name.contains(['\r', '\n']) {
            prop_assert!(!line.contains(['\r', '\n']), "{:?}", line);
        }
        let Some((section, rest)) = line.split_once(' ') else {
            return Err(TestCaseError::fail(format!("no space in {line:?}")));
        };
        prop_assert_eq!(rest, name.as_str());
        prop_assert!(section.is_empty() || section.ends_with(';'), "{:?}", section);
        let mut sent = Vec::new();
        for pair in section.split_terminator(';') {
            let Some((fact, value)) = pair.split_once('=') else {
                return Err(TestCaseError::fail(format!("{pair:?} is not fact=value")));
            };
            match fact {
                "type" => prop_assert_eq!(value, if meta.is_dir { "dir" } else { "file" }),
                "size" => prop_assert_eq!(value, meta.len.to_string()),
                "modify" => prop_assert_eq!(value, timeval(meta.modified)),
                "perm" => prop_assert!(value.chars().all(|c| "acdeflmprw".contains(c))),
                "unique" => prop_assert_eq!(Some(value), meta.unique.as_deref()),
                other => return Err(TestCaseError::fail(format!("unknown fact {other:?}"))),
            }
            sent.push(format!("{fact};"));
        }
        let selected = facts.selected();
        let expected: String = selected
            .split_terminator(';')
            .filter(|f| *f != "unique" || meta.unique.is_some())
            .map(|f| format!("{f};"))
            .collect();
        prop_assert_eq!(sent.concat(), expected);
    }
}
