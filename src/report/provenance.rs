//! Where the plan came from: the git commit of the work tree the plan file lives in, and whether that
//! work tree had changes to tracked files, recorded in the report beside the runner's version.
//!
//! The commit is read from `.git` itself — `HEAD`, loose refs, `packed-refs`, and for a linked worktree
//! its `gitdir:` file and `commondir` — so it is known without git installed. Whether the tree is dirty
//! takes comparing the index with the files, which is git's work: `git status --porcelain
//! --untracked-files=no` (what `git describe --dirty` counts: untracked files, such as a `runs/` folder,
//! do not make a tree dirty), without taking git's optional locks, bounded in time. Without git, or
//! when it fails or takes too long, `dirty` is unknown (null), never guessed.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::model::PlanGit;

/// How long `git status` may take before dirtiness is left unknown.
const STATUS_LIMIT: Duration = Duration::from_secs(3);

/// The git provenance of a plan file, when it lives in a git work tree.
pub fn of_plan(plan: &Path) -> Option<PlanGit> {
    let plan = std::path::absolute(plan).ok()?;
    let (root, git_dir) = find_work_tree(plan.parent()?)?;
    let common = common_dir(&git_dir);
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let branch = head
        .strip_prefix("ref: ")
        .and_then(|r| r.trim().strip_prefix("refs/heads/"))
        .map(str::to_string);
    let commit = resolve(&git_dir, &common, "HEAD", 0);
    let path = plan
        .strip_prefix(&root)
        .unwrap_or(&plan)
        .display()
        .to_string();
    Some(PlanGit {
        commit,
        branch,
        dirty: dirty(&root),
        path,
    })
}

/// The work tree holding `start` and its git directory: the first folder upwards with a `.git`
/// directory, or a `.git` file naming one (`gitdir: …`, as in a linked worktree or a submodule).
fn find_work_tree(start: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        let dot = d.join(".git");
        if dot.is_dir() {
            return Some((d.to_path_buf(), dot));
        }
        if dot.is_file() {
            let text = std::fs::read_to_string(&dot).ok()?;
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            let git_dir = d.join(target);
            return git_dir.is_dir().then(|| (d.to_path_buf(), git_dir));
        }
        dir = d.parent();
    }
    None
}

/// Where a git directory's shared refs are: its `commondir` (a linked worktree's main repository), else
/// itself.
fn common_dir(git_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(c) => git_dir.join(c.trim()),
        Err(_) => git_dir.to_path_buf(),
    }
}

fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The object id a ref names, following symbolic refs (a few levels at most): the worktree's own file,
/// then the shared one, then `packed-refs`. `None` for a branch without commits yet.
fn resolve(git_dir: &Path, common: &Path, name: &str, depth: u8) -> Option<String> {
    if depth > 5 || name.contains("..") {
        return None;
    }
    let loose = [git_dir.join(name), common.join(name)]
        .into_iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
    if let Some(text) = loose {
        let text = text.trim();
        if let Some(target) = text.strip_prefix("ref:") {
            return resolve(git_dir, common, target.trim(), depth + 1);
        }
        return is_object_id(text).then(|| text.to_ascii_lowercase());
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .find_map(|l| {
            let (id, r) = l.split_once(' ')?;
            (r.trim() == name && is_object_id(id)).then(|| id.to_ascii_lowercase())
        })
}

/// Whether tracked files of the work tree differ from its commit, as `git status` says; `None` when git
/// is not there, fails, or takes longer than [`STATUS_LIMIT`].
fn dirty(root: &Path) -> Option<bool> {
    let mut child = Command::new("git")
        .arg("--no-optional-locks")
        .arg("-C")
        .arg(root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        // The work tree is the plan's, whatever a calling hook or script set.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    // Read on the side, so that a long listing never blocks git on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + STATUS_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().ok()?;
    status
        .filter(|s| s.success())
        .map(|_| out.iter().any(|b| !b.is_ascii_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn commits_are_read_from_loose_and_packed_refs_and_through_a_worktree_file() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let git = repo.join(".git");
        write(&git.join("HEAD"), "ref: refs/heads/main\n");
        write(&git.join("refs/heads/main"), &format!("{A}\n"));
        write(
            &git.join("packed-refs"),
            &format!("# pack-refs with: peeled fully-peeled sorted\n{B} refs/heads/old\n^{A}\n"),
        );
        write(&repo.join("plans/p.yaml"), "version: 1\n");

        let (root, dir) = find_work_tree(&repo.join("plans")).unwrap();
        assert_eq!(root, repo);
        let common = common_dir(&dir);
        assert_eq!(resolve(&dir, &common, "HEAD", 0).as_deref(), Some(A));
        assert_eq!(
            resolve(&dir, &common, "refs/heads/old", 0).as_deref(),
            Some(B)
        );
        assert_eq!(resolve(&dir, &common, "refs/heads/none", 0), None);

        // A linked worktree: `.git` is a file naming its git directory, whose `commondir` is the repo's.
        let wt = t.path().join("wt");
        let wt_git = git.join("worktrees/wt");
        write(&wt_git.join("HEAD"), "ref: refs/heads/old\n");
        write(&wt_git.join("commondir"), "../..\n");
        write(&wt.join(".git"), &format!("gitdir: {}\n", wt_git.display()));
        write(&wt.join("p.yaml"), "version: 1\n");
        let g = of_plan(&wt.join("p.yaml")).unwrap();
        assert_eq!(g.commit.as_deref(), Some(B));
        assert_eq!(g.branch.as_deref(), Some("old"));
        assert_eq!(g.path, "p.yaml");

        // Detached HEAD; a branch without commits.
        write(&git.join("HEAD"), &format!("{A}\n"));
        let g = of_plan(&repo.join("plans/p.yaml")).unwrap();
        assert_eq!((g.commit.as_deref(), g.branch), (Some(A), None));
        assert_eq!(g.path, "plans/p.yaml");
        write(&git.join("HEAD"), "ref: refs/heads/new\n");
        let g = of_plan(&repo.join("plans/p.yaml")).unwrap();
        assert_eq!((g.commit, g.branch.as_deref()), (None, Some("new")));
    }

    #[test]
    fn a_plan_outside_any_work_tree_has_no_provenance() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p.yaml");
        write(&p, "version: 1\n");
        // The temporary folder may itself sit in a work tree on some machine: only assert what holds.
        if find_work_tree(t.path()).is_none() {
            assert_eq!(of_plan(&p), None);
        }
    }
}
