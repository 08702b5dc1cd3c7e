//! Hugging Face folders: `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), `tokenizer.json`. Files are memory-mapped;
//! tensor bytes are not copied until the GPU upload.

use super::weights::{Bytes, DType, ModelWeights, Tensor, WeightName};
use super::{LlamaConfig, LoadError, Model};
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Tensors of one or more memory-mapped safetensors files, by name.
pub struct SafetensorsFiles {
    tensors: HashMap<String, Tensor>,
}

impl SafetensorsFiles {
    pub fn open_folder(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        if single.exists() {
            files.push(single);
        } else if index.exists() {
            check_regular_file(&index)?;
            let text = std::fs::read_to_string(&index).map_err(|e| LoadError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                LoadError::Format(format!("{} is not valid JSON: {e}", index.display()))
            })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    LoadError::Format(format!("{} has no `weight_map` object", index.display()))
                })?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            shards.sort();
            shards.dedup();
            for s in shards {
                if s.contains('/') || s.contains('\\') || s.contains("..") {
                    return Err(LoadError::Format(format!(
                        "shard name `{s}` is not a plain file name"
                    )));
                }
                files.push(dir.join(s));
            }
        } else {
            return Err(LoadError::MissingFile(single));
        }
        let mut tensors = HashMap::new();
        let mut from: HashMap<String, std::path::PathBuf> = HashMap::new();
        for f in files {
            for (name, t) in Self::open_file(&f)? {
                if let Some(first) = from.get(&name) {
                    return Err(LoadError::Format(format!(
                        "tensor `{name}` appears in both {} and {}",
                        first.display(),
                        f.display()
                    )));
                }
                from.insert(name.clone(), f.clone());
                tensors.insert(name, t);
            }
        }
        Ok(SafetensorsFiles { tensors })
    }

    /// Maps one file and lists its tensors (bytes stay in the mapping).
    pub fn open_file(path: &Path) -> Result<Vec<(String, Tensor)>, LoadError> {
        if !path.exists() {
            return Err(LoadError::MissingFile(path.to_path_buf()));
        }
        check_regular_file(path)?;
        let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
        // SAFETY: the mapping is read-only; sramlm never writes model files, and
        // the usual caveat (another process truncating the file) is accepted by
        // every mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
        let map = Arc::new(map);
        Self::parse(&map, &path.display().to_string(), |start, len| {
            Bytes::Mapped {
                map: map.clone(),
                start,
                len,
            }
        })
    }

    /// Lists the tensors of a safetensors image held in memory for the whole
    /// run (the embedded default model); bytes are not copied.
    pub fn open_static(
        buf: &'static [u8],
        label: &str,
    ) -> Result<Vec<(String, Tensor)>, LoadError> {
        Self::parse(buf, label, |start, len| {
            Bytes::Static(&buf[start..start + len])
        })
    }

    /// One safetensors image: its tensors, each as `bytes(start, len)` of
    /// the image.
    fn parse(
        buf: &[u8],
        label: &str,
        bytes: impl Fn(usize, usize) -> Bytes,
    ) -> Result<Vec<(String, Tensor)>, LoadError> {
        let st = safetensors::SafeTensors::deserialize(buf)
            .map_err(|e| LoadError::Format(format!("{label}: {e}")))?;
        let base = buf.as_ptr() as usize;
        let mut out = Vec::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                other => {
                    return Err(LoadError::UnsupportedDType {
                        tensor: name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            let data = view.data();
            let start = data.as_ptr() as usize - base;
            out.push((
                name,
                Tensor {
                    dtype,
                    shape: view.shape().to_vec(),
                    bytes: bytes(start, data.len()),
                },
            ));
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn take(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Names of the tensors not taken yet, sorted.
    pub fn remaining(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Refuses anything but a regular file (a directory, a FIFO, a device) before
/// it is opened: opening a FIFO blocks forever, mapping a directory fails with
/// an unrelated message.
pub fn check_regular_file(path: &Path) -> Result<(), LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    let what = if meta.is_dir() {
        "is a directory, not a file"
    } else if !meta.is_file() {
        "is not a regular file (a FIFO, socket or device); give a file"
    } else {
        return Ok(());
    };
    Err(LoadError::io(path, std::io::Error::other(what)))
}

/// Tensors a file holds that the loader ignores on purpose: rotary tables
/// (recomputed from the config) and an lm_head equal to the tied embedding.
fn ignorable(name: &str, tied: bool) -> bool {
    name.ends_with("rotary_emb.inv_freq")
        || name == "rope_freqs.weight"
        || (tied && (name == "lm_head.weight" || name == "output.weight"))
}

/// Refuses a file whose tensors the config does not use (a config naming
/// fewer layers than the file holds would otherwise silently drop the rest).
pub fn refuse_unused(unused: &[String], cfg: &LlamaConfig) -> Result<(), LoadError> {
    let bad: Vec<&String> = unused
        .iter()
        .filter(|n| !ignorable(n, cfg.tie_word_embeddings))
        .collect();
    if let Some(first) = bad.first() {
        return Err(LoadError::Config(format!(
            "tensor `{first}`{} in the weights is not used by the config ({} layers): the config does not describe this file",
            if bad.len() > 1 {
                format!(" (and {} more)", bad.len() - 1)
            } else {
                String::new()
            },
            cfg.num_layers
        )));
    }
    Ok(())
}

/// Loads a Hugging Face Llama folder.
pub fn load_folder(dir: &Path) -> Result<Model, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotFound(dir.to_path_buf()));
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.exists() {
        return Err(LoadError::MissingFile(cfg_path));
    }
    let config = LlamaConfig::from_hf_json(&cfg_path)?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.exists() {
        return Err(LoadError::MissingFile(tok_path));
    }
    check_regular_file(&tok_path)?;
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let files = SafetensorsFiles::open_folder(dir)?;
    let tc_path = dir.join("tokenizer_config.json");
    let tokenizer_config = tc_path
        .is_file()
        .then(|| std::fs::read_to_string(&tc_path).ok())
        .flatten();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    assemble(
        name,
        dir,
        config,
        tokenizer,
        files,
        tokenizer_config.as_deref(),
    )
}

/// A folder's files held in memory for the whole run (the embedded default
/// model): same checks and result as [`load_folder`].
pub struct StaticFolder {
    pub name: &'static str,
    pub config_json: &'static str,
    pub tokenizer_json: &'static [u8],
    pub tokenizer_config_json: Option<&'static str>,
    pub safetensors: &'static [u8],
}

/// Loads a [`StaticFolder`]; `path` is what the model reports as its origin.
pub fn load_static(f: &StaticFolder, path: &Path) -> Result<Model, LoadError> {
    let config = LlamaConfig::from_hf_str(f.config_json, &path.join("config.json"))?;
    let tokenizer = Tokenizer::from_bytes(f.tokenizer_json)?;
    let files = SafetensorsFiles {
        tensors: SafetensorsFiles::open_static(
            f.safetensors,
            &path.join("model.safetensors").display().to_string(),
        )?
        .into_iter()
        .collect(),
    };
    assemble(
        f.name.to_string(),
        path,
        config,
        tokenizer,
        files,
        f.tokenizer_config_json,
    )
}

/// The model from a folder's parts, wherever they were read from.
fn assemble(
    name: String,
    path: &Path,
    mut config: LlamaConfig,
    tokenizer: Tokenizer,
    mut files: SafetensorsFiles,
    tokenizer_config: Option<&str>,
) -> Result<Model, LoadError> {
    // transformers 5 does not tie an embedding and an lm_head.weight the
    // file holds with other values, whatever `tie_word_embeddings` says (it
    // warns and runs the file's lm_head): so neither does sramlm.
    if config.tie_word_embeddings {
        let head = files.get(&WeightName::LmHead.hf());
        let embed = files.get(&WeightName::Embed.hf_for(&config));
        if let (Some(h), Some(e)) = (head, embed) {
            if h.dtype != e.dtype || h.shape != e.shape || h.bytes.as_slice() != e.bytes.as_slice()
            {
                config.tie_word_embeddings = false;
            }
        }
    }
    let weights = ModelWeights::assemble(
        &config,
        |w: WeightName| Ok(files.take(&w.hf_for(&config))),
        &|w: WeightName| w.hf_for(&config),
    )?;
    refuse_unused(&files.remaining(), &config)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(LoadError::Config(format!(
            "tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    for (what, id) in config
        .bos_token_id
        .iter()
        .map(|&i| ("bos_token_id", i))
        .chain(config.eos_token_ids.iter().map(|&i| ("eos_token_id", i)))
    {
        if tokenizer.id_to_token(id).is_none() {
            return Err(LoadError::Config(format!(
                "{what} {id} is not in tokenizer.json ({} tokens)",
                tokenizer.vocab_size()
            )));
        }
    }
    let chat_template = tokenizer_config
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| {
            v.get("chat_template")
                .and_then(|s| s.as_str())
                .map(String::from)
        });
    Ok(Model {
        name,
        path: path.to_path_buf(),
        format: "safetensors",
        config,
        weights,
        tokenizer,
        chat_template,
    })
}
