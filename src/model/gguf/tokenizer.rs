//! Tokenizers described by GGUF metadata (`tokenizer.ggml.*`), rebuilt as a
//! `tokenizers::Tokenizer` the way Hugging Face's GGUF conversion and
//! llama.cpp read them.
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE over `tokenizer.ggml.tokens`
//!   and `tokenizer.ggml.merges`, with the split rule named by
//!   `tokenizer.ggml.pre`. For `smollm` (and the other llama.cpp
//!   pre-tokenizers of that family) every numeric character (`\p{N}`) is split
//!   off on its own before the GPT-2 regex, as llama.cpp does (and as the
//!   original Hugging Face `tokenizer.json` of those models does with
//!   `Digits(individual_digits)`); `llama-bpe`/`llama3` and `qwen2` get their
//!   own regexes; anything else gets the plain GPT-2 regex.
//! * `tokenizer.ggml.model = "llama"`: SentencePiece-style BPE with byte
//!   fallback. The merges come from `tokenizer.ggml.merges` when present,
//!   otherwise they are derived from `tokenizer.ggml.scores` exactly as
//!   Hugging Face's converter does (every split of every token whose halves
//!   are both tokens, ranked by the token's score). Spaces become `▁` and one
//!   `▁` is prepended to each stretch of text (`tokenizer.ggml.add_space_prefix`,
//!   default true).
//!
//! Tokens of type control (3) and unknown (2) become special added tokens:
//! written in the prompt they encode to their single id, and decoding skips
//! them. User-defined tokens (4) are matched in the raw text too but are not
//! special. `tokenizer.ggml.add_bos_token` / `add_eos_token` decide whether
//! `encode` adds BOS/EOS (defaults: gpt2 neither, llama BOS only).

use super::{GgufArray, GgufFile, GgufValue};
use crate::model::LoadError;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, Template, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const UNDEFINED: i64 = 0;
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const UNUSED: i64 = 5;
    pub const BYTE: i64 = 6;
}

/// The Llama 3 split regex (llama.cpp `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex (llama.cpp `qwen2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer metadata of a GGUF file, typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre` (gpt2 only).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i64>>,
    /// `"left right"` pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

fn tok_err(msg: impl Into<String>) -> LoadError {
    LoadError::Tokenizer(msg.into())
}

fn wrong_type(key: &str, v: &GgufValue, expected: &str) -> LoadError {
    tok_err(format!(
        "metadata `{key}` has type {}, expected {expected}",
        v.type_name()
    ))
}

fn get_str(g: &GgufFile, key: &str) -> Result<Option<String>, LoadError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| wrong_type(key, v, "string")),
    }
}

fn get_bool(g: &GgufFile, key: &str) -> Result<Option<bool>, LoadError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| wrong_type(key, v, "bool")),
    }
}

fn get_id(g: &GgufFile, key: &str) -> Result<Option<u32>, LoadError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            // llama.cpp writes -1 (as i32/u32::MAX) for "no such token".
            Some(-1) | Some(0xFFFF_FFFF) => Ok(None),
            Some(x) => u32::try_from(x)
                .map(Some)
                .map_err(|_| tok_err(format!("metadata `{key}` = {x} is not a valid token id"))),
            None => Err(wrong_type(key, v, "an integer token id")),
        },
    }
}

fn get_arr<'a>(g: &'a GgufFile, key: &str) -> Result<Option<&'a GgufArray>, LoadError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| wrong_type(key, v, "an array")),
    }
}

fn get_strings(g: &GgufFile, key: &str) -> Result<Option<Vec<String>>, LoadError> {
    match get_arr(g, key)? {
        None => Ok(None),
        Some(a) => a.as_strings().map(|s| Some(s.to_vec())).ok_or_else(|| {
            tok_err(format!(
                "metadata `{key}` has type {}, expected array of string",
                a.type_name()
            ))
        }),
    }
}

impl GgufVocab {
    /// Reads `tokenizer.ggml.*`; every key of the wrong type is an error naming it.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, LoadError> {
        let model = get_str(g, "tokenizer.ggml.model")?
            .ok_or_else(|| tok_err("metadata `tokenizer.ggml.model` is missing"))?;
        let tokens = get_strings(g, "tokenizer.ggml.tokens")?
            .ok_or_else(|| tok_err("metadata `tokenizer.ggml.tokens` is missing"))?;
        let scores = match get_arr(g, "tokenizer.ggml.scores")? {
            None => None,
            Some(a) => Some(a.to_f32_vec().ok_or_else(|| {
                tok_err(format!(
                    "metadata `tokenizer.ggml.scores` has type {}, expected array of f32",
                    a.type_name()
                ))
            })?),
        };
        let token_types = match get_arr(g, "tokenizer.ggml.token_type")? {
            None => None,
            Some(a) => Some(a.to_i64_vec().ok_or_else(|| {
                tok_err(format!(
                    "metadata `tokenizer.ggml.token_type` has type {}, expected array of i32",
                    a.type_name()
                ))
            })?),
        };
        Ok(GgufVocab {
            model,
            pre: get_str(g, "tokenizer.ggml.pre")?,
            tokens,
            scores,
            token_types,
            merges: get_strings(g, "tokenizer.ggml.merges")?,
            bos: get_id(g, "tokenizer.ggml.bos_token_id")?,
            eos: get_id(g, "tokenizer.ggml.eos_token_id")?,
            unk: get_id(g, "tokenizer.ggml.unknown_token_id")?,
            add_bos: get_bool(g, "tokenizer.ggml.add_bos_token")?,
            add_eos: get_bool(g, "tokenizer.ggml.add_eos_token")?,
            add_space_prefix: get_bool(g, "tokenizer.ggml.add_space_prefix")?,
        })
    }

    fn validate(&self) -> Result<(), LoadError> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(tok_err("`tokenizer.ggml.tokens` is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(tok_err(format!("{n} tokens do not fit 32-bit ids")));
        }
        if let Some(s) = &self.scores {
            if s.len() != n {
                return Err(tok_err(format!(
                    "`tokenizer.ggml.scores` has {} entries for {n} tokens",
                    s.len()
                )));
            }
        }
        if let Some(t) = &self.token_types {
            if t.len() != n {
                return Err(tok_err(format!(
                    "`tokenizer.ggml.token_type` has {} entries for {n} tokens",
                    t.len()
                )));
            }
        }
        for (what, id) in [("bos", self.bos), ("eos", self.eos), ("unknown", self.unk)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(tok_err(format!(
                        "{what} token id {id} is outside the vocabulary ({n} tokens)"
                    )));
                }
            }
        }
        Ok(())
    }

    fn token_type(&self, id: usize) -> i64 {
        self.token_types
            .as_ref()
            .and_then(|t| t.get(id).copied())
            .unwrap_or(token_type::NORMAL)
    }
}

/// Builds the tokenizer a GGUF file describes.
pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer, LoadError> {
    build(&GgufVocab::from_gguf(g)?)
}

/// Builds a tokenizer from typed GGUF vocabulary metadata.
pub fn build(v: &GgufVocab) -> Result<Tokenizer, LoadError> {
    v.validate()?;
    let inner = match v.model.as_str() {
        "gpt2" => byte_level_bpe(v)?,
        "llama" => sentencepiece_bpe(v)?,
        other => {
            return Err(tok_err(format!(
                "tokenizer model `{other}` is not supported (sramlm reads `gpt2` and `llama` GGUF vocabularies)"
            )))
        }
    };
    Ok(Tokenizer::from_inner(inner))
}

fn vocab_map(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// Splits `"left right"` at the first space after the first character (as
/// llama.cpp does, so a merge whose left side is a space still parses).
fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>, LoadError> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at)
                .ok_or_else(|| {
                    tok_err(format!(
                        "merge {i} ({m:?}) is not two tokens separated by a space"
                    ))
                })?;
            Ok((m[..split].to_string(), m[split + 1..].to_string()))
        })
        .collect()
}

/// Most work (the sum over tokens of their byte length squared) deriving
/// merges from a vocabulary may take: every split of every token is looked
/// up, so one very long token costs its length squared in time and its merges
/// as much in memory. Real vocabularies need a few million (Llama 2: ~2M).
pub const MAX_SPLIT_WORK: u64 = 1 << 26;

/// Refuses a vocabulary whose merges would take [`MAX_SPLIT_WORK`] or more
/// to derive, naming its longest token.
fn check_split_work(tokens: &[String]) -> Result<(), LoadError> {
    let work = tokens
        .iter()
        .fold(0u64, |a, t| a.saturating_add((t.len() as u64).pow(2)));
    if work > MAX_SPLIT_WORK {
        let (id, longest) = tokens
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| t.len())
            .map(|(i, t)| (i, t.len()))
            .unwrap_or((0, 0));
        return Err(tok_err(format!(
            "the vocabulary has no merges, and deriving them from its tokens would take {work} steps (at most {MAX_SPLIT_WORK}): its tokens are too long (token {id} is {longest} bytes)"
        )));
    }
    Ok(())
}

/// Merges derived from SentencePiece scores, as Hugging Face's
/// `SentencePieceExtractor` / `generate_merges` does: for every token, every
/// split into two tokens; ranked by the token's score (highest first), then by
/// the lengths of the left and right pieces (longest first); ties keep
/// vocabulary order.
pub fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(String, String, f32)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        let score = scores.get(id).copied().unwrap_or(0.0);
        let mut local: Vec<(usize, usize, &str, &str)> = tok
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = tok.split_at(at);
                Some((*vocab.get(l)?, *vocab.get(r)?, l, r))
            })
            .collect();
        local.sort_by_key(|&(li, ri, _, _)| (li, ri));
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, l, r)| (l.to_string(), r.to_string(), score)),
        );
    }
    merges.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| b.0.chars().count().cmp(&a.0.chars().count()))
            .then_with(|| b.1.chars().count().cmp(&a.1.chars().count()))
    });
    merges.into_iter().map(|(l, r, _)| (l, r)).collect()
}

fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizerWrapper, LoadError> {
    let regex_split = |re: &str| -> Result<PreTokenizerWrapper, LoadError> {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(format!("pre-tokenizer regex: {e}")))?;
        Ok(PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])))
    };
    Ok(match pre.unwrap_or("default") {
        // llama.cpp: "\p{N}" first, then the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ]))
        }
        "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" => regex_split(LLAMA3_REGEX)?,
        "qwen2" | "deepseek-r1-qwen" => regex_split(QWEN2_REGEX)?,
        // "default", "gpt-2", "gpt2" and anything unknown: the GPT-2 regex.
        _ => ByteLevel::new(false, true, true).into(),
    })
}

/// BOS/EOS around each sequence, as `add_bos`/`add_eos` ask.
fn post_processor(
    v: &GgufVocab,
    add_bos: bool,
    add_eos: bool,
) -> Result<Option<TemplateProcessing>, LoadError> {
    let mut single: Vec<String> = Vec::new();
    let mut pair: Vec<String> = Vec::new();
    let mut specials = Vec::new();
    let mut push_special = |key: &str, id: u32| {
        specials.push(SpecialToken::new(
            key.to_string(),
            vec![id],
            vec![v.tokens[id as usize].clone()],
        ));
    };
    let bos = v.bos.filter(|_| add_bos);
    let eos = v.eos.filter(|_| add_eos);
    if let Some(id) = bos {
        push_special("bos", id);
    }
    if let Some(id) = eos {
        push_special("eos", id);
    }
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    for (seq, type_id) in [("$A", 0), ("$B", 1)] {
        let t = if type_id == 0 { &mut single } else { &mut pair };
        if bos.is_some() {
            t.push(format!("bos:{type_id}"));
        }
        t.push(format!("{seq}:{type_id}"));
        if eos.is_some() {
            t.push(format!("eos:{type_id}"));
        }
    }
    pair.splice(0..0, single.clone());
    let specials = specials
        .into_iter()
        .collect::<tokenizers::Result<Vec<_>>>()
        .map_err(|e| tok_err(format!("post-processor: {e}")))?;
    let single = Template::try_from(single).map_err(|e| tok_err(format!("post-processor: {e}")))?;
    let pair = Template::try_from(pair).map_err(|e| tok_err(format!("post-processor: {e}")))?;
    TemplateProcessing::builder()
        .single(single)
        .pair(pair)
        .special_tokens(specials)
        .build()
        .map(Some)
        .map_err(|e| tok_err(format!("post-processor: {e}")))
}

/// Control/unknown tokens as special added tokens, user-defined ones as
/// plain added tokens (both matched in the raw text).
fn add_added_tokens(tk: &mut tokenizers::Tokenizer, v: &GgufVocab) -> Result<(), LoadError> {
    let added = v.tokens.iter().enumerate().filter(|&(id, t)| {
        !t.is_empty()
            && matches!(
                v.token_type(id),
                token_type::CONTROL | token_type::UNKNOWN | token_type::USER_DEFINED
            )
    });
    crate::tokenizer::check_added_tokens(added.map(|(_, t)| t.as_str()))?;
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (id, tok) in v.tokens.iter().enumerate() {
        if tok.is_empty() {
            continue;
        }
        match v.token_type(id) {
            token_type::CONTROL | token_type::UNKNOWN => {
                special.push(AddedToken::from(tok.clone(), true).normalized(false))
            }
            token_type::USER_DEFINED => {
                user.push(AddedToken::from(tok.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tk.add_special_tokens(special)
            .map_err(|e| tok_err(format!("special tokens: {e}")))?;
    }
    if !user.is_empty() {
        tk.add_tokens(user)
            .map_err(|e| tok_err(format!("user-defined tokens: {e}")))?;
    }
    Ok(())
}

fn byte_level_bpe(v: &GgufVocab) -> Result<tokenizers::Tokenizer, LoadError> {
    let merges = parse_merges(v.merges.as_deref().ok_or_else(|| {
        tok_err("metadata `tokenizer.ggml.merges` is missing (a gpt2 vocabulary needs it)")
    })?)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(&v.tokens), merges)
        .build()
        .map_err(|e| tok_err(format!("byte-level BPE: {e}")))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pre_tokenizer(v.pre.as_deref())?));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let post = post_processor(v, v.add_bos.unwrap_or(false), v.add_eos.unwrap_or(false))?;
    tk.with_post_processor(post);
    add_added_tokens(&mut tk, v)?;
    Ok(tk)
}

fn sentencepiece_bpe(v: &GgufVocab) -> Result<tokenizers::Tokenizer, LoadError> {
    let merges = match v.merges.as_deref() {
        Some(m) if !m.is_empty() => parse_merges(m)?,
        _ => {
            let scores: Vec<f32> = match &v.scores {
                Some(s) => s.clone(),
                // No scores: earlier tokens win, as in a vocabulary sorted by frequency.
                None => (0..v.tokens.len()).map(|i| -(i as f32)).collect(),
            };
            check_split_work(&v.tokens)?;
            merges_from_scores(&v.tokens, &scores)
        }
    };
    let unk = v
        .unk
        .map(|id| id as usize)
        .or_else(|| (0..v.tokens.len()).find(|&i| v.token_type(i) == token_type::UNKNOWN))
        .map(|id| v.tokens[id].clone());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(&v.tokens), merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| tok_err(format!("SentencePiece BPE: {e}")))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let add_prefix = v.add_space_prefix.unwrap_or(true);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| tok_err(format!("normalizer: {e}")))
    };
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_prefix {
        norms.push(Prepend::new("▁".to_string()).into());
    }
    norms.push(replace(" ", "▁")?.into());
    tk.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
        norms,
    ))))
    .map_err(|e| tok_err(format!("normalizer: {e}")))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        DecoderWrapper::Replace(replace("▁", " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    let post = post_processor(v, v.add_bos.unwrap_or(true), v.add_eos.unwrap_or(false))?;
    tk.with_post_processor(post);
    add_added_tokens(&mut tk, v)?;
    Ok(tk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's byte → printable character table.
    fn byte_char(b: u8) -> char {
        let mut n = 0u32;
        for x in 0..=255u8 {
            let printable = (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
            if x == b {
                return if printable {
                    char::from(x)
                } else {
                    char::from_u32(256 + n).unwrap()
                };
            }
            if !printable {
                n += 1;
            }
        }
        unreachable!()
    }

    fn bl(s: &str) -> String {
        s.bytes().map(byte_char).collect()
    }

    /// A tiny byte-level vocabulary: 3 control tokens, the 256 bytes, a few merges.
    fn tiny_gpt2() -> GgufVocab {
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        tokens.extend((0..=255u8).map(byte_char).map(String::from));
        let merges = ["Ġ t", "h e", "Ġt he", "1 2"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut types = vec![token_type::CONTROL; 3];
        types.extend(std::iter::repeat_n(token_type::NORMAL, tokens.len() - 3));
        GgufVocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens,
            token_types: Some(types),
            merges: Some(merges.iter().map(|s| s.to_string()).collect()),
            bos: Some(1),
            eos: Some(2),
            add_bos: Some(false),
            ..Default::default()
        }
    }

    fn id_of(v: &GgufVocab, tok: &str) -> u32 {
        v.tokens.iter().position(|t| t == tok).unwrap() as u32
    }

    #[test]
    fn gpt2_merges_specials_and_round_trip() {
        let v = tiny_gpt2();
        let tk = build(&v).unwrap();
        let ids = tk.encode("<|im_start|>he the<|im_end|>").unwrap();
        let the = id_of(&v, &bl(" the"));
        let he = id_of(&v, "he");
        assert_eq!(ids, vec![1, he, the, 2]);
        assert_eq!(tk.decode(&ids).unwrap(), "he the");
        // Non-ASCII round trip through the byte alphabet.
        let text = "naïve ☕ 日本";
        let ids = tk.encode(text).unwrap();
        assert_eq!(tk.decode(&ids).unwrap(), text);
    }

    #[test]
    fn smollm_pre_tokenizer_splits_each_digit() {
        let v = tiny_gpt2();
        let tk = build(&v).unwrap();
        // "12" is a token, but `smollm` splits digits before BPE sees them.
        let ids = tk.encode("12").unwrap();
        assert_eq!(ids, vec![id_of(&v, "1"), id_of(&v, "2")]);
        let mut plain = tiny_gpt2();
        plain.pre = Some("gpt-2".into());
        let tk = build(&plain).unwrap();
        assert_eq!(tk.encode("12").unwrap(), vec![id_of(&v, "12")]);
    }

    #[test]
    fn add_bos_and_eos_are_honoured() {
        let mut v = tiny_gpt2();
        v.add_bos = Some(true);
        v.add_eos = Some(true);
        let tk = build(&v).unwrap();
        let ids = tk.encode("he").unwrap();
        assert_eq!(ids, vec![1, id_of(&v, "he"), 2]);
        assert_eq!(tk.encode_with("he", false).unwrap(), vec![id_of(&v, "he")]);
    }

    #[test]
    fn user_defined_tokens_match_but_are_not_skipped() {
        let mut v = tiny_gpt2();
        v.tokens.push("<tool>".into());
        v.token_types
            .as_mut()
            .unwrap()
            .push(token_type::USER_DEFINED);
        let tk = build(&v).unwrap();
        let ids = tk.encode("he<tool>").unwrap();
        let tool = (v.tokens.len() - 1) as u32;
        assert_eq!(ids, vec![id_of(&v, "he"), tool]);
        assert_eq!(tk.decode(&ids).unwrap(), "he<tool>");
    }

    fn build_err(v: &GgufVocab) -> String {
        match build(v) {
            Ok(_) => panic!("expected an error for {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_merges_and_lengths_are_errors() {
        let mut v = tiny_gpt2();
        v.merges = Some(vec!["nospace".into()]);
        assert!(build_err(&v).contains("nospace"));
        let mut v = tiny_gpt2();
        v.merges = Some(vec!["x@ y@".into()]);
        assert!(build(&v).is_err());
        let mut v = tiny_gpt2();
        v.token_types = Some(vec![1, 2]);
        assert!(build_err(&v).contains("token_type"));
        let mut v = tiny_gpt2();
        v.bos = Some(100_000);
        assert!(build_err(&v).contains("bos"));
        let mut v = tiny_gpt2();
        v.model = "bert".into();
        assert!(build_err(&v).contains("bert"));
    }

    /// A tiny SentencePiece vocabulary with scores and byte fallback.
    fn tiny_spm() -> GgufVocab {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![
            token_type::UNKNOWN,
            token_type::CONTROL,
            token_type::CONTROL,
        ];
        let mut scores = vec![0.0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(token_type::BYTE);
            scores.push(0.0);
        }
        // Pieces, best score first (as SentencePiece stores them).
        for (piece, score) in [
            ("▁t", -1.0),
            ("he", -2.0),
            ("▁the", -3.0),
            ("▁", -4.0),
            ("t", -5.0),
            ("h", -6.0),
            ("e", -7.0),
            ("a", -8.0),
            ("▁a", -9.0),
            ("▁th", -10.0),
        ] {
            tokens.push(piece.into());
            types.push(token_type::NORMAL);
            scores.push(score);
        }
        GgufVocab {
            model: "llama".into(),
            tokens,
            scores: Some(scores),
            token_types: Some(types),
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn long_tokens_without_merges_are_refused_not_split() {
        let mut v = tiny_spm();
        v.merges = None;
        let n = v.tokens.len();
        v.tokens[n - 1] = "a".repeat(1 << 20);
        let t = std::time::Instant::now();
        let e = build_err(&v);
        assert!(e.contains("too long") && e.contains("1048576 bytes"), "{e}");
        // (a hang guard, not a performance bound: the quadratic split took minutes)
        assert!(t.elapsed().as_secs() < 60);
    }

    #[test]
    fn spm_merges_follow_scores() {
        let v = tiny_spm();
        let m = merges_from_scores(&v.tokens, v.scores.as_ref().unwrap());
        // `▁the` (score -3) splits as ▁t+he and ▁th+e; the longer left piece first.
        let pos = |l: &str, r: &str| m.iter().position(|x| x.0 == l && x.1 == r).unwrap();
        assert_eq!(m[0], ("▁".to_string(), "t".to_string()));
        assert!(pos("h", "e") < pos("▁th", "e"));
        assert!(pos("▁th", "e") < pos("▁t", "he"));
        assert!(pos("▁t", "he") < pos("▁", "a"));
    }

    #[test]
    fn spm_encodes_with_prefix_space_bos_and_byte_fallback() {
        let v = tiny_spm();
        let tk = build(&v).unwrap();
        let id = |t: &str| id_of(&v, t);
        let ids = tk.encode("the a").unwrap();
        assert_eq!(ids, vec![1, id("▁the"), id("▁a")]);
        assert_eq!(tk.decode(&ids).unwrap(), "the a");
        // 'é' is not a piece: two byte tokens.
        let ids = tk.encode("é").unwrap();
        assert_eq!(ids, vec![1, id("▁"), id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(tk.decode(&ids).unwrap(), "é");
        // Special tokens in the text, and the empty prompt.
        let ids = tk.encode("</s>").unwrap();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(tk.encode("").unwrap(), vec![1]);
        // add_bos_token = false, add_space_prefix = false.
        let mut v2 = tiny_spm();
        v2.add_bos = Some(false);
        v2.add_space_prefix = Some(false);
        let tk = build(&v2).unwrap();
        assert_eq!(tk.encode("he").unwrap(), vec![id("he")]);
    }
}
