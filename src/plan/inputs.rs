//! The files a plan reads besides itself, and the rules for reading them.
//!
//! A plan comes from a repository, and what it reads as inputs must come from there too: a prompt
//! file (and any file a plan may include later) is read only when it resolves — symbolic links
//! followed — inside the plan's repository, the git work tree that holds the plan file (found by
//! walking up to a `.git`), or the plan's folder when it is in none. `prompt_file: /proc/self/environ`
//! would otherwise put the whole environment, tokens included, into the prompt and from there into the
//! report, the journal and the events. Secret files are the operator's and may be anywhere.
//!
//! Every such file is read with a bound: a prompt holds at most 4,000 characters, so at most 16,000
//! bytes (4 per character) are read, and a file with more is refused without reading the rest (a
//! `/dev/zero` would otherwise be read until memory runs out). Only regular files are read; a FIFO
//! or a device is refused without blocking on it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The most characters an input file may hold: a prompt's limit.
pub const MAX_INPUT_CHARS: usize = crate::policy::MAX_PROMPT_CHARS;

/// The most bytes read of an input file: [`MAX_INPUT_CHARS`] characters of at most 4 bytes each.
pub const MAX_INPUT_BYTES: u64 = 4 * MAX_INPUT_CHARS as u64;

/// Why an input file was not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// It does not exist.
    #[error("no such file")]
    NotFound,
    /// It may not be read.
    #[error("permission denied")]
    PermissionDenied,
    /// It resolves outside the plan's repository.
    #[error(
        "it is outside the plan's repository (the git work tree that holds the plan, or the plan's folder when it is in none)"
    )]
    Outside,
    /// It is a folder, a FIFO, a device or a socket.
    #[error("it is not a regular file")]
    NotAFile,
    /// It holds more than [`MAX_INPUT_CHARS`] characters.
    #[error("it holds more than {MAX_INPUT_CHARS} characters")]
    TooLong,
    /// It is not UTF-8.
    #[error("it is not UTF-8 text")]
    NotUtf8,
    /// Another I/O error.
    #[error("{0}")]
    Io(String),
}

impl InputError {
    pub(crate) fn from_io(e: &std::io::Error) -> InputError {
        match e.kind() {
            std::io::ErrorKind::NotFound => InputError::NotFound,
            std::io::ErrorKind::PermissionDenied => InputError::PermissionDenied,
            _ => InputError::Io(e.to_string()),
        }
    }
}

/// The repository of a plan in `plan_dir`: the nearest folder at or above it (symbolic links
/// resolved) that holds a `.git` (a folder, or the file of a linked work tree), else `plan_dir`
/// itself.
pub fn repository_root(plan_dir: &Path) -> PathBuf {
    let dir = std::fs::canonicalize(plan_dir)
        .or_else(|_| std::path::absolute(plan_dir))
        .unwrap_or_else(|_| plan_dir.to_path_buf());
    dir.ancestors()
        .find(|a| a.join(".git").exists())
        .map_or_else(|| dir.clone(), Path::to_path_buf)
}

/// Reads an input file named `name` (relative to `dir`, or absolute) that must lie inside `root`.
pub fn read_confined(root: &Path, dir: &Path, name: &str) -> Result<String, InputError> {
    let path = dir.join(name);
    let real = std::fs::canonicalize(&path).map_err(|e| InputError::from_io(&e))?;
    if !real.starts_with(root) {
        return Err(InputError::Outside);
    }
    read_bounded(&real)
}

/// Reads a regular file of at most [`MAX_INPUT_CHARS`] characters, reading no more than
/// [`MAX_INPUT_BYTES`] + 1 bytes of it.
pub fn read_bounded(path: &Path) -> Result<String, InputError> {
    let file = open_nonblocking(path).map_err(|e| InputError::from_io(&e))?;
    let meta = file.metadata().map_err(|e| InputError::from_io(&e))?;
    if !meta.is_file() {
        return Err(InputError::NotAFile);
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(InputError::TooLong);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| InputError::from_io(&e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLong);
    }
    let text = String::from_utf8(bytes).map_err(|_| InputError::NotUtf8)?;
    if text.chars().count() > MAX_INPUT_CHARS {
        return Err(InputError::TooLong);
    }
    Ok(text)
}

/// Opens a file for reading without blocking on a FIFO (which is then refused as not a file).
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_the_work_tree_or_the_folder() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let plans = repo.join("plans/team");
        std::fs::create_dir_all(&plans).unwrap();
        // Without a `.git`, the plan's folder.
        assert_eq!(repository_root(&plans), plans.canonicalize().unwrap());
        // A linked work tree has a `.git` file.
        std::fs::write(repo.join(".git"), "gitdir: elsewhere\n").unwrap();
        assert_eq!(repository_root(&plans), repo.canonicalize().unwrap());
    }

    #[test]
    fn reads_inside_and_refuses_outside() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("plans")).unwrap();
        std::fs::write(repo.join("prompt.md"), "hello").unwrap();
        std::fs::write(t.path().join("outside.md"), "secret").unwrap();
        let root = repository_root(&repo.join("plans"));
        let dir = repo.join("plans");
        assert_eq!(read_confined(&root, &dir, "../prompt.md").unwrap(), "hello");
        assert_eq!(
            read_confined(&root, &dir, "../../outside.md"),
            Err(InputError::Outside)
        );
        assert_eq!(
            read_confined(&root, &dir, "/proc/self/environ"),
            Err(InputError::Outside)
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(t.path().join("outside.md"), repo.join("link.md")).unwrap();
            assert_eq!(
                read_confined(&root, &dir, "../link.md"),
                Err(InputError::Outside)
            );
        }
        assert_eq!(
            read_confined(&root, &dir, "missing.md"),
            Err(InputError::NotFound)
        );
    }

    #[test]
    fn reads_at_most_what_a_prompt_can_hold() {
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("ok.md");
        std::fs::write(&ok, "é".repeat(MAX_INPUT_CHARS)).unwrap();
        assert_eq!(read_bounded(&ok).unwrap().chars().count(), MAX_INPUT_CHARS);
        let long = t.path().join("long.md");
        std::fs::write(&long, "a".repeat(MAX_INPUT_CHARS + 1)).unwrap();
        assert_eq!(read_bounded(&long), Err(InputError::TooLong));
        #[cfg(target_os = "linux")]
        {
            // A device is refused without reading it; /proc files (size 0) are read with the bound.
            assert_eq!(
                read_bounded(Path::new("/dev/zero")),
                Err(InputError::NotAFile)
            );
            assert!(read_bounded(Path::new("/proc/self/status")).is_ok());
        }
        assert_eq!(read_bounded(t.path()), Err(InputError::NotAFile));
    }
}
