//! Finding the images of a run: files as given, folders walked (optionally
//! recursively), hidden files and our own outputs skipped, and where each
//! input's outputs go (with `--out`, the input folders are mirrored below it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Image file extensions picked up from folders (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

/// One image to explain and the folder its outputs go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The image file.
    pub input: PathBuf,
    /// Where its outputs are written.
    pub out_dir: PathBuf,
}

impl Job {
    /// Output path `<out_dir>/<stem>.<analyzer>.<ext>` (the stem's bytes kept
    /// as they are, UTF-8 or not).
    pub fn output(&self, analyzer: &str, ext: &str) -> PathBuf {
        let mut name = self
            .input
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_else(|| "input".into());
        name.push(format!(".{analyzer}.{ext}"));
        self.out_dir.join(name)
    }
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Whether a file in a folder is an image to explain: a known extension, not
/// hidden, and not one of our outputs (`<stem>.<analyzer>.png` for any name in
/// `analyzers`).
pub fn is_candidate(p: &Path, analyzers: &[&str]) -> bool {
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    // <stem>.<analyzer>.png, <stem>.<analyzer>.concept-<layer>-<k>.png, ...
    let own_output = p
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.split('.').skip(1).any(|a| analyzers.contains(&a)));
    !hidden(p) && IMAGE_EXTENSIONS.contains(&ext.as_str()) && !own_output
}

fn walk(dir: &Path, recursive: bool, analyzers: &[&str], out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive && !hidden(&p) {
                walk(&p, recursive, analyzers, out)?;
            }
        } else if is_candidate(&p, analyzers) {
            out.push(p);
        }
    }
    Ok(())
}

/// The jobs of a run. Files are taken as given (even with another extension:
/// decoding tells); folders are walked. Without `out`, outputs go next to each
/// input; with it, below `out`, a folder input's structure mirrored under the
/// folder's own name so that equal names from different folders never collide.
/// A run that finds no image at all (folders without images, or with images
/// only in sub-folders and no `recursive`) is an error naming the folder.
pub fn collect(
    inputs: &[PathBuf],
    recursive: bool,
    out: Option<&Path>,
    analyzers: &[&str],
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    // an input named twice (or reached both directly and through its
    // folder) is explained once, where it was first named
    let mut seen = std::collections::HashSet::new();
    let mut empty = None;
    let mut push = |jobs: &mut Vec<Job>, job: Job| {
        if seen.insert(identity(&job.input)) {
            jobs.push(job);
        }
    };
    for given in inputs {
        if given.is_dir() {
            let mut files = Vec::new();
            walk(given, recursive, analyzers, &mut files)?;
            if files.is_empty() && empty.is_none() {
                empty = Some(given);
            }
            let base = given.file_name().map(PathBuf::from).unwrap_or_default();
            for f in files {
                let out_dir = match out {
                    None => f.parent().map(Path::to_path_buf).unwrap_or_default(),
                    Some(o) => {
                        let rel = f
                            .strip_prefix(given)
                            .ok()
                            .and_then(Path::parent)
                            .unwrap_or(Path::new(""));
                        o.join(&base).join(rel)
                    }
                };
                push(&mut jobs, Job { input: f, out_dir });
            }
        } else {
            let out_dir = match out {
                Some(o) => o.to_path_buf(),
                None => given.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            push(
                &mut jobs,
                Job {
                    input: given.clone(),
                    out_dir,
                },
            );
        }
    }
    if let (true, Some(dir)) = (jobs.is_empty(), empty) {
        anyhow::bail!(
            "no images found in {}{}",
            dir.display(),
            if recursive {
                ""
            } else {
                " (sub-folders need --recursive)"
            }
        );
    }
    Ok(jobs)
}

/// One part of a job array's split (`--shard K/N`): the `index`-th of
/// `count` parts, 0-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// K, in `0..count`.
    pub index: usize,
    /// N, at least 1.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `K/N` with `0 <= K < N`: the message says what is wrong, for clap to
    /// put after the flag and the value.
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let Some((k, n)) = s.split_once('/') else {
            return Err("expected K/N (part K of N, 0-based), e.g. 0/4".into());
        };
        let number = |p: &str, what: &str| -> std::result::Result<usize, String> {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("{what} '{}' is not a whole number >= 0", p.trim()))
        };
        let (index, count) = (number(k, "K")?, number(n, "N")?);
        if count == 0 {
            return Err("N must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "K must be below N (K = 0..{}), got K = {index}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the job at `rank` in the run's list sorted by input path
    /// belongs to this part: every N-th from K (round robin, so that a
    /// folder of large images is spread over the parts, and the parts'
    /// sizes differ by at most one).
    pub fn owns(&self, rank: usize) -> bool {
        rank % self.count == self.index
    }

    /// The indices into `jobs` of this part's jobs, in path order. Which
    /// part a job is in depends only on the whole list (the same in every
    /// process of the array), so the parts 0..N-1 together hold each job
    /// exactly once.
    pub fn select(&self, jobs: &[Job]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        // ties (the same path given twice is one job already) broken by
        // position, so the order is total
        order.sort_by(|&a, &b| jobs[a].input.cmp(&jobs[b].input).then(a.cmp(&b)));
        order
            .into_iter()
            .enumerate()
            .filter(|&(rank, _)| self.owns(rank))
            .map(|(_, i)| i)
            .collect()
    }
}

/// What a path names, for comparing paths: absolute, symbolic links and
/// `.`/`..` resolved as far as the path exists (a file not written yet is
/// its resolved folder joined with the rest).
pub fn identity(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(c) = abs.canonicalize() {
        return c;
    }
    // the longest existing ancestor, resolved, then the rest lexically
    let mut rest = Vec::new();
    let mut base = abs;
    let resolved = loop {
        if let Ok(c) = base.canonicalize() {
            break c;
        }
        match base.components().next_back() {
            Some(c @ (Component::Normal(_) | Component::ParentDir)) => {
                rest.push(c.as_os_str().to_os_string())
            }
            Some(Component::CurDir) => {}
            _ => break base,
        }
        if !base.pop() {
            break base;
        }
    };
    let mut out = resolved;
    for part in rest.into_iter().rev() {
        if part == ".." {
            out.pop();
        } else {
            out.push(part);
        }
    }
    out
}

/// Jobs that must not run because an output of theirs would overwrite an
/// input of the run, or a file another job writes (the earlier job keeps
/// it). `outputs` lists the files a job writes. Returns, in job order, the
/// index of each refused job and why (naming the output and the other file).
pub fn output_conflicts(
    jobs: &[Job],
    outputs: &dyn Fn(&Job) -> Vec<PathBuf>,
) -> Vec<(usize, String)> {
    use std::collections::HashMap;
    let inputs: HashMap<PathBuf, &Path> = jobs
        .iter()
        .map(|j| (identity(&j.input), j.input.as_path()))
        .collect();
    let mut claimed: HashMap<PathBuf, &Path> = HashMap::new();
    let mut refused = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let outs: Vec<(PathBuf, PathBuf)> = outputs(job)
            .into_iter()
            .map(|o| (identity(&o), o))
            .collect();
        let clash = outs.iter().find_map(|(id, o)| {
            if let Some(input) = inputs.get(id) {
                Some(format!(
                    "its output {} would overwrite the input {}; not explained (use another --out)",
                    o.display(),
                    input.display()
                ))
            } else {
                claimed.get(id).map(|other| {
                    format!(
                        "its output {} is already the output of {}; not explained (rename one or use --out)",
                        o.display(),
                        other.display()
                    )
                })
            }
        });
        match clash {
            Some(why) => refused.push((i, why)),
            None => {
                for (id, _) in outs {
                    claimed.insert(id, &job.input);
                }
            }
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_and_mirrored_below_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("photos");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        for f in [
            "a.JPG",
            "b.png",
            "notes.txt",
            ".secret.jpg",
            "a.zplus.png",
            "sub/c.webp",
            "sub/deeper/d.tif",
            ".hidden/e.jpg",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let names = ["zplus"];
        let flat = collect(std::slice::from_ref(&root), false, None, &names).unwrap();
        let got: Vec<_> = flat
            .iter()
            .map(|j| j.input.strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        assert_eq!(got, vec![PathBuf::from("a.JPG"), PathBuf::from("b.png")]);
        assert_eq!(flat[0].out_dir, root);

        let out = d.path().join("out");
        let deep = collect(std::slice::from_ref(&root), true, Some(&out), &names).unwrap();
        let got: Vec<_> = deep
            .iter()
            .map(|j| {
                (
                    j.input.strip_prefix(&root).unwrap().to_path_buf(),
                    j.out_dir.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (PathBuf::from("a.JPG"), out.join("photos")),
                (PathBuf::from("b.png"), out.join("photos")),
                (PathBuf::from("sub/c.webp"), out.join("photos/sub")),
                (
                    PathBuf::from("sub/deeper/d.tif"),
                    out.join("photos/sub/deeper")
                ),
            ]
        );
        assert_eq!(
            deep[2].output("zplus", "png"),
            out.join("photos/sub/c.zplus.png")
        );
    }

    #[test]
    fn a_run_without_images_names_the_folder() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("photos");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.png"), b"x").unwrap();
        let e = collect(std::slice::from_ref(&dir), false, None, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "no images found in {} (sub-folders need --recursive)",
                dir.display()
            )
        );
        assert_eq!(collect(&[dir], true, None, &[]).unwrap().len(), 1);
    }

    #[test]
    fn an_input_named_twice_is_one_job() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("x.png"), b"x").unwrap();
        let given = [
            dir.join("x.png"),
            dir.join(".").join("x.png"),
            dir.join("..").join("a").join("x.png"),
            dir.clone(),
        ];
        let jobs = collect(&given, false, None, &[]).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].input, dir.join("x.png"));
    }

    #[cfg(unix)]
    #[test]
    fn output_names_keep_non_utf8_bytes() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let job = Job {
            input: PathBuf::from(OsStr::from_bytes(b"in/caf\xe9.png")),
            out_dir: PathBuf::from("out"),
        };
        assert_eq!(
            job.output("zplus", "png").as_os_str().as_bytes(),
            b"out/caf\xe9.zplus.png"
        );
    }

    #[test]
    fn identity_resolves_what_exists_and_the_rest_lexically() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        assert_eq!(identity(&root.join("a/./b/../c.png")), root.join("a/c.png"));
        assert_eq!(identity(&root.join("a/../a")), root.join("a"));
    }

    #[test]
    fn shards_parse_or_say_what_is_wrong() {
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        assert_eq!(" 3 / 4 ".parse(), Ok(Shard { index: 3, count: 4 }));
        assert_eq!(Shard { index: 2, count: 5 }.to_string(), "2/5");
        for (bad, why) in [
            ("4/4", "K must be below N (K = 0..3), got K = 4"),
            ("0/0", "N must be at least 1"),
            ("1", "expected K/N"),
            ("a/2", "K 'a' is not a whole number"),
            ("1/b", "N 'b' is not a whole number"),
            ("-1/2", "K '-1' is not"),
            ("1/2/3", "N '2/3' is not"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn shards_split_the_sorted_list_round_robin() {
        // given out of path order: the split follows the paths, not the
        // command line
        let jobs: Vec<Job> = ["d", "b", "a", "e", "c"]
            .iter()
            .map(|n| Job {
                input: PathBuf::from(format!("{n}.png")),
                out_dir: PathBuf::new(),
            })
            .collect();
        let names = |s: Shard| -> Vec<String> {
            s.select(&jobs)
                .into_iter()
                .map(|i| jobs[i].input.display().to_string())
                .collect()
        };
        // sorted: a b c d e; part 0 of 2 takes ranks 0, 2, 4
        assert_eq!(
            names(Shard { index: 0, count: 2 }),
            ["a.png", "c.png", "e.png"]
        );
        assert_eq!(names(Shard { index: 1, count: 2 }), ["b.png", "d.png"]);
        assert_eq!(names(Shard { index: 6, count: 7 }), Vec::<String>::new());
        for n in 1..=7 {
            let mut all: Vec<usize> = (0..n)
                .flat_map(|k| Shard { index: k, count: n }.select(&jobs))
                .collect();
            all.sort();
            assert_eq!(all, [0, 1, 2, 3, 4], "N = {n}");
        }
    }

    #[test]
    fn conflicting_outputs_are_refused_in_order() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let job = |name: &str| Job {
            input: dir.join(name),
            out_dir: dir.clone(),
        };
        let jobs = vec![
            job("cat.jpg"),
            job("cat.png"),
            job("dog.png"),
            job("dog.zplus.png"),
        ];
        let outputs = |j: &Job| vec![j.output("zplus", "png")];
        let refused = output_conflicts(&jobs, &outputs);
        assert_eq!(refused.len(), 2, "{refused:?}");
        // cat.png would write cat.jpg's output
        assert_eq!(refused[0].0, 1);
        assert!(
            refused[0].1.contains("already the output of"),
            "{:?}",
            refused[0]
        );
        assert!(refused[0].1.contains("cat.jpg"), "{:?}", refused[0]);
        // dog.png would overwrite the input dog.zplus.png
        assert_eq!(refused[1].0, 2);
        assert!(
            refused[1].1.contains("would overwrite the input"),
            "{:?}",
            refused[1]
        );
    }
}
