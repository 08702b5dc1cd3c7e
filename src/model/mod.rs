//! Model loading: one canonical description ([`LlamaConfig`] + [`ModelWeights`]
//! + [`Tokenizer`]), produced by a loader per file format.

pub mod config;
pub mod gguf;
pub mod safetensors;
pub mod weights;

pub use config::{
    Activation, ArchFeatures, LlamaConfig, LocalRope, RopeError, RopeLayout, RopeScaling, RopeType,
};
pub use weights::{DType, LayerTensor, ModelWeights, Tensor, WeightName};

use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Everything that can go wrong between a path on disk and a model in memory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model path {0} does not exist")]
    NotFound(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is missing from the model folder")]
    MissingFile(PathBuf),
    #[error("unsupported architecture: {0} (sramlm runs LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and Gemma3ForCausalLM folders; GGUF `llama`, `qwen2`, `qwen3` and `gemma3`)")]
    UnsupportedArchitecture(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("tensor `{0}` is missing from the weights")]
    MissingTensor(String),
    #[error("tensor `{tensor}` has shape {found:?}, but the config implies {expected:?}")]
    Shape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("unsupported tensor type {dtype} for tensor `{tensor}`")]
    UnsupportedDType { tensor: String, dtype: String },
    #[error("corrupt or truncated weights file: {0}")]
    Format(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0} is neither a model folder (config.json + model.safetensors) nor a GGUF file")]
    NotAModel(PathBuf),
}

impl LoadError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A loaded model: configuration, weights (still in file encoding, mostly
/// memory-mapped) and tokenizer.
pub struct Model {
    /// Short display name (folder or file stem).
    pub name: String,
    pub path: PathBuf,
    /// `"safetensors"` or `"gguf"`.
    pub format: &'static str,
    pub config: LlamaConfig,
    pub weights: ModelWeights,
    pub tokenizer: Tokenizer,
    /// Jinja chat template, when the model ships one.
    pub chat_template: Option<String>,
}

/// Loads a Hugging Face model folder or a `.gguf` file.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    if !path.exists() {
        return Err(LoadError::NotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        safetensors::load_folder(path)
    } else if let Err(e) = safetensors::check_regular_file(path) {
        Err(e)
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        gguf::load(path)
    } else if path.file_name().is_some_and(|n| n == "config.json") {
        safetensors::load_folder(path.parent().unwrap_or(Path::new(".")))
    } else {
        // Sniff the magic so a renamed GGUF still loads.
        let mut magic = [0u8; 4];
        use std::io::Read;
        let ok = std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok();
        if ok && &magic == b"GGUF" {
            gguf::load(path)
        } else {
            Err(LoadError::NotAModel(path.to_path_buf()))
        }
    }
}

/// The model compiled into the default search path: `models/stories260K`.
pub fn default_model_path() -> PathBuf {
    // A fresh clone run through cargo: the crate's own models/ folder.
    let in_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/stories260K");
    let rel = PathBuf::from("models/stories260K");
    if rel.exists() {
        rel
    } else {
        in_crate
    }
}

/// The default model compiled into the binary (`models/stories260K`: weights,
/// config, tokenizer), so an installed `sramlm` generates from any directory.
pub mod embedded {
    /// Aligns the embedded weights like a memory-mapped file would be.
    #[repr(C, align(64))]
    struct Aligned<T: ?Sized>(T);

    static WEIGHTS: &Aligned<[u8]> = &Aligned(*include_bytes!(
        "../../models/stories260K/model.safetensors"
    ));

    /// The files of `models/stories260K`, as compiled in.
    pub const FOLDER: super::safetensors::StaticFolder = super::safetensors::StaticFolder {
        name: "stories260K",
        config_json: include_str!("../../models/stories260K/config.json"),
        tokenizer_json: include_bytes!("../../models/stories260K/tokenizer.json"),
        tokenizer_config_json: Some(include_str!(
            "../../models/stories260K/tokenizer_config.json"
        )),
        safetensors: &WEIGHTS.0,
    };

    /// What the embedded model reports as its path.
    pub const PATH: &str = "(embedded) stories260K";
}

/// Loads the embedded default model (no file is read).
pub fn load_embedded() -> Result<Model, LoadError> {
    safetensors::load_static(&embedded::FOLDER, Path::new(embedded::PATH))
}
