//! GGUF loader (placeholder until the GGUF issue lands).
use super::{LoadError, Model};
use std::path::Path;

pub fn load(path: &Path) -> Result<Model, LoadError> {
    Err(LoadError::Format(format!(
        "{}: GGUF files are not supported yet",
        path.display()
    )))
}
