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

/// Longest added token accepted, in bytes. Real added tokens are markers
/// such as `<|im_start|>` or runs of spaces (tens of bytes).
pub const MAX_ADDED_TOKEN_BYTES: usize = 4096;
/// Most bytes of all added tokens together. The `tokenizers` crate builds a
/// matching automaton over them that takes ~50-70x their size in memory, so
/// this bounds that (Gemma 3's ~6,000 added tokens are ~100 KB).
pub const MAX_ADDED_TOKENS_TOTAL_BYTES: usize = 4 << 20;

/// Refuses added tokens (matched in raw text) too long or too many to build
/// a matcher for in bounded memory, before the `tokenizers` crate builds it.
pub fn check_added_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<(), LoadError> {
    let mut total = 0usize;
    for (i, t) in tokens.into_iter().enumerate() {
        if t.len() > MAX_ADDED_TOKEN_BYTES {
            return Err(LoadError::Tokenizer(format!(
                "added token {i} is {} bytes long; at most {MAX_ADDED_TOKEN_BYTES} are accepted",
                t.len()
            )));
        }
        total += t.len();
        if total > MAX_ADDED_TOKENS_TOTAL_BYTES {
            return Err(LoadError::Tokenizer(format!(
                "the added tokens take more than {MAX_ADDED_TOKENS_TOTAL_BYTES} bytes in all (at token {i}); that is not a real vocabulary"
            )));
        }
    }
    Ok(())
}

/// Just the added tokens of a tokenizer.json (everything else skipped).
#[derive(serde::Deserialize)]
struct AddedOnly {
    #[serde(default)]
    added_tokens: Vec<AddedContent>,
}

#[derive(serde::Deserialize)]
struct AddedContent {
    content: String,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let json = std::fs::read(path)
            .map_err(|e| LoadError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&json).map_err(|e| match e {
            LoadError::Tokenizer(m) => LoadError::Tokenizer(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    pub fn from_bytes(json: &[u8]) -> Result<Self, LoadError> {
        // A malformed file is reported by `tokenizers` below, with its own
        // message; here only the added tokens' sizes matter.
        if let Ok(a) = serde_json::from_slice::<AddedOnly>(json) {
            check_added_tokens(a.added_tokens.iter().map(|t| t.content.as_str()))?;
        }
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
