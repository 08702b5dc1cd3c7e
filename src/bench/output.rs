//! Output files of `sramlm bench` (`--json`, `--svg`): checked before the
//! benchmark runs, never one of the run's inputs, written to a temporary file
//! in the same folder and renamed over the target, so a failure leaves the old
//! file (or none) and never half a file.

use std::path::{Path, PathBuf};

/// Why an output file of `sramlm bench` is refused before the run. (No
/// variant carries a `source`: each message is already one complete line.)
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{} does not name a file", .0.display())]
    NoFileName(PathBuf),
    #[error("cannot write {}: folder {} is not usable ({error})", path.display(), folder.display())]
    FolderUnusable {
        path: PathBuf,
        folder: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {}: {} is not a folder", path.display(), folder.display())]
    NotAFolder { path: PathBuf, folder: PathBuf },
    #[error("{flag} {}: is a directory", path.display())]
    IsDirectory { flag: String, path: PathBuf },
    /// [`OutputError::NoFileName`], `FolderUnusable` or `NotAFolder` for `flag`.
    #[error("{flag}: {error}")]
    Unusable {
        flag: String,
        error: Box<OutputError>,
    },
    #[error("{other} and {flag} both name {}: give two different files", path.display())]
    SameFile {
        other: String,
        flag: String,
        path: PathBuf,
    },
    #[error("{flag} {} is an input of this run ({}): refusing to overwrite it", path.display(), input.display())]
    IsInput {
        flag: String,
        path: PathBuf,
        input: PathBuf,
    },
    #[error("{flag} {}: cannot write there: {error}", path.display())]
    NotWritable {
        flag: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Where an output goes, for comparisons: the canonical parent folder joined
/// with the file name (the file itself may not exist yet).
fn resolved(path: &Path) -> Result<PathBuf, OutputError> {
    let name = path
        .file_name()
        .ok_or_else(|| OutputError::NoFileName(path.to_path_buf()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent
        .canonicalize()
        .map_err(|error| OutputError::FolderUnusable {
            path: path.to_path_buf(),
            folder: parent.to_path_buf(),
            error,
        })?;
    if !dir.is_dir() {
        return Err(OutputError::NotAFolder {
            path: path.to_path_buf(),
            folder: parent.to_path_buf(),
        });
    }
    Ok(dir.join(name))
}

/// The files a model path stands for (a folder: the files in it).
pub fn model_inputs(model: &Path) -> Vec<PathBuf> {
    if model.is_dir() {
        std::fs::read_dir(model)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .take(10_000)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![model.to_path_buf()]
    }
}

/// Same file: same device and inode where both exist, else same resolved path.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (resolved(a), resolved(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Checks `outputs` (flag, path) before any work: each names a file in an
/// existing, writable folder, is not a folder itself, is none of `inputs`,
/// and no two outputs are the same file.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[PathBuf]) -> Result<(), OutputError> {
    let mut seen: Vec<(&str, PathBuf)> = Vec::new();
    for &(flag, path) in outputs {
        if path.is_dir() {
            return Err(OutputError::IsDirectory {
                flag: flag.to_string(),
                path: path.to_path_buf(),
            });
        }
        let r = resolved(path).map_err(|e| OutputError::Unusable {
            flag: flag.to_string(),
            error: Box::new(e),
        })?;
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == r || same_file(p, &r)) {
            return Err(OutputError::SameFile {
                other: other.to_string(),
                flag: flag.to_string(),
                path: path.to_path_buf(),
            });
        }
        if let Some(i) = inputs.iter().find(|i| same_file(i, path)) {
            return Err(OutputError::IsInput {
                flag: flag.to_string(),
                path: path.to_path_buf(),
                input: i.clone(),
            });
        }
        // Writable: create (and remove) a file in the folder now, not after
        // the benchmark.
        let probe = temp_name(&r);
        std::fs::File::create(&probe).map_err(|error| OutputError::NotWritable {
            flag: flag.to_string(),
            path: path.to_path_buf(),
            error,
        })?;
        let _ = std::fs::remove_file(&probe);
        seen.push((flag, r));
    }
    Ok(())
}

fn temp_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to a temporary file next to `path` and renames it over
/// `path` (a symlink at `path` is replaced, not followed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let target = resolved(path).map_err(std::io::Error::other)?;
    let tmp = temp_name(&target);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_inputs_duplicates_and_folders() {
        let dir = std::env::temp_dir().join(format!("sramlm-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let inputs = vec![model.clone()];
        let a = dir.join("a.json");
        assert!(check_outputs(&[("--json", &a)], &inputs).is_ok());
        let e = check_outputs(&[("--json", &model)], &inputs).unwrap_err();
        assert!(matches!(e, OutputError::IsInput { .. }), "{e:?}");
        assert!(e.to_string().contains("input"), "{e}");
        let e = check_outputs(&[("--json", &a), ("--svg", &a)], &inputs).unwrap_err();
        assert!(matches!(e, OutputError::SameFile { .. }), "{e:?}");
        assert!(e.to_string().contains("both"), "{e}");
        let e = check_outputs(&[("--svg", &dir)], &inputs).unwrap_err();
        assert!(matches!(e, OutputError::IsDirectory { .. }), "{e:?}");
        assert!(e.to_string().contains("directory"), "{e}");
        let e = check_outputs(&[("--svg", &dir.join("no/such/x.svg"))], &inputs).unwrap_err();
        assert!(matches!(e, OutputError::Unusable { .. }), "{e:?}");
        assert!(e.to_string().contains("not usable"), "{e}");
        write_atomic(&a, b"{}").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"{}");
        assert_eq!(std::fs::read(&model).unwrap(), b"GGUF");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
