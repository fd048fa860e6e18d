//! The files a plan's load read: the plan file, its `--vars` files, its prompt files and the sub-plans
//! its `uses:` steps include (with their prompt files), each with
//! where it is in the plan's repository and the SHA-256 of the bytes read. A run with a shared store
//! keeps them (content-addressed) so that another host can resume it (docs/scaling.md). Secret files
//! are never among them: they are read by [`super::secrets`], which records nothing.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// What a file was to the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// The plan file itself.
    Plan,
    /// A `--vars` file.
    Vars,
    /// A step's `prompt_file`.
    Prompt,
    /// A plan a `uses:` step includes.
    SubPlan,
}

impl FileRole {
    /// The role's word, as stored.
    pub fn word(self) -> &'static str {
        match self {
            FileRole::Plan => "plan",
            FileRole::Vars => "vars",
            FileRole::Prompt => "prompt",
            FileRole::SubPlan => "subplan",
        }
    }

    /// The role of a stored word.
    pub fn from_word(w: &str) -> Option<FileRole> {
        match w {
            "plan" => Some(FileRole::Plan),
            "vars" => Some(FileRole::Vars),
            "prompt" => Some(FileRole::Prompt),
            "subplan" => Some(FileRole::SubPlan),
            _ => None,
        }
    }
}

/// What a run folder rebuilt from a store (`resume --store` on another host) holds as `.git` at the
/// root of its copy of the plan's files: the copy is the plan's repository (prompt files are confined
/// to it, as on the first host), but not a git work tree.
pub const COPY_MARKER: &str =
    "not a git repository: the files of a run copied by aitbc-flow resume\n";

/// Whether `dir` lies in such a copy: what it lacks is what was never copied (secret files).
pub fn in_rebuilt_copy(dir: &Path) -> bool {
    dir.ancestors()
        .any(|d| std::fs::read(d.join(".git")).is_ok_and(|b| b == COPY_MARKER.as_bytes()))
}

/// One file the load read.
#[derive(Clone)]
pub struct FileRead {
    /// What it was.
    pub role: FileRole,
    /// Its path relative to the plan's repository root (`/`-separated), or absolute when it lies
    /// outside the repository (a `--vars` file may).
    pub path: String,
    /// The path as the load was given it (the plan file and `--vars` files, as the journal names
    /// them); `None` for a prompt file, which the plan names relative to its folder.
    pub given: Option<PathBuf>,
    /// SHA-256 of `bytes`, hex.
    pub sha256: String,
    /// The bytes read.
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for FileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRead")
            .field("role", &self.role)
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl FileRead {
    /// The file at `path` (as given), read as `bytes`, placed relative to `root`.
    pub fn new(role: FileRole, root: &Path, path: &Path, given: bool, bytes: &[u8]) -> FileRead {
        FileRead::hashed(
            role,
            root,
            path,
            given,
            bytes,
            super::check::content_hash(bytes),
        )
    }

    /// [`FileRead::new`] for bytes whose SHA-256 the caller has already computed (the plan file's,
    /// hashed as it is read).
    pub fn hashed(
        role: FileRole,
        root: &Path,
        path: &Path,
        given: bool,
        bytes: &[u8],
        sha256: String,
    ) -> FileRead {
        FileRead {
            role,
            path: relative_to(root, path),
            given: given.then(|| path.to_path_buf()),
            sha256,
            bytes: Arc::from(bytes),
        }
    }
}

/// `path` relative to `root` (both resolved), `/`-separated; the absolute path when it is outside.
pub fn relative_to(root: &Path, path: &Path) -> String {
    let real = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    match real.strip_prefix(root) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => real.display().to_string(),
    }
}

/// Whether a stored relative path stays inside the folder it is placed under (no `..`, not
/// absolute): the only ones a copy is written to.
pub fn stays_inside(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Adds `f` unless the same role and path is listed already (a matrix step reads its prompt file
/// once per copy).
pub fn add(list: &mut Vec<FileRead>, f: FileRead) {
    if !list.iter().any(|g| g.role == f.role && g.path == f.path) {
        list.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_repository_and_only_plain_ones_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("plans/prompts")).unwrap();
        std::fs::write(root.join("plans/prompts/a.md"), "hi").unwrap();
        let f = FileRead::new(
            FileRole::Prompt,
            &root,
            &root.join("plans/../plans/prompts/a.md"),
            false,
            b"hi",
        );
        assert_eq!(f.path, "plans/prompts/a.md");
        assert_eq!(f.given, None);
        assert_eq!(f.sha256, super::super::check::content_hash(b"hi"));
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path().join("v.yaml");
        std::fs::write(&o, "a: 1").unwrap();
        assert!(Path::new(&relative_to(&root, &o)).is_absolute());
        assert!(stays_inside("plans/prompts/a.md"));
        assert!(!stays_inside("../etc/passwd"));
        assert!(!stays_inside("/etc/passwd"));
        assert!(!stays_inside("a/../../b"));
        assert!(!stays_inside(""));
        let mut list = vec![f.clone()];
        add(&mut list, f);
        assert_eq!(list.len(), 1);
    }
}
