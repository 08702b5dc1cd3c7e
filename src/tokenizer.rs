//! Text ↔ token ids through the `tokenizers` crate (built without C libraries).

use crate::model::LoadError;
use std::path::Path;

/// A thin wrapper over `tokenizers::Tokenizer` with the conventions the
/// reference uses: `add_special_tokens = true` on encode (BOS where the model's
/// post-processor adds it; special tokens written in the text are matched as
/// special tokens), `skip_special_tokens = true` on decode.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| LoadError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_bytes(json: &[u8]) -> Result<Self, LoadError> {
        let inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| LoadError::Tokenizer(e.to_string()))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer { inner }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LoadError> {
        self.encode_with(text, true)
    }

    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, LoadError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| LoadError::Tokenizer(format!("cannot encode prompt: {e}")))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, LoadError> {
        // The tokenizers crate skips ids it does not know; a model whose
        // vocabulary is larger than its tokenizer's would lose text silently.
        if let Some(&id) = ids.iter().find(|&&i| self.inner.id_to_token(i).is_none()) {
            return Err(LoadError::Tokenizer(format!(
                "token id {id} is not in the tokenizer's vocabulary ({} tokens)",
                self.vocab_size()
            )));
        }
        self.inner
            .decode(ids, true)
            .map_err(|e| LoadError::Tokenizer(format!("cannot decode ids: {e}")))
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Turns a growing list of ids into text pieces for streaming: it decodes the
/// whole continuation each time and emits only what is new, holding back an
/// incomplete UTF-8 sequence (byte-fallback tokens) until it completes.
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder {
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds one id and returns the newly completed text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, LoadError> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = if text.len() >= self.emitted && text.is_char_boundary(self.emitted) {
            text[self.emitted..].to_string()
        } else {
            String::new()
        };
        self.emitted = text.len();
        Ok(new)
    }
}
