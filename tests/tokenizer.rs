//! The stories260K tokenizer (`models/stories260K/tokenizer.json`) against the
//! reference token ids.

use sramlm::tokenizer::Tokenizer;
use std::path::Path;

#[test]
fn stories260k_prompt_ids_match_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tok = Tokenizer::from_file(&root.join("models/stories260K/tokenizer.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let fixture = root.join("tests/fixtures/stories260K/stories260K.json");
    let text =
        std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompts = reference["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 5);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for p in prompts {
        let key = p["key"].as_str().unwrap();
        let text = p["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&p["input_ids"]), "{key}: {text:?}");
        assert_eq!(
            tok.encode_with(text, false).unwrap(),
            ids(&p["input_ids_with_add_special_tokens_false"]),
            "{key}: add_special_tokens=false"
        );
        // BOS is skipped when decoding; the text comes back, except that the
        // SentencePiece decoder drops the single prefix space it added.
        assert_eq!(tok.decode(&got).unwrap(), text, "{key}: decode");
    }
}

/// The GGUF `llama` (SentencePiece) path on a real vocabulary: stories260K's
/// pieces with SentencePiece-style scores (`-id`) and no stored merges, so the
/// merges are derived from the scores. It must tokenize like the model's own
/// `tokenizer.json`.
#[test]
fn gguf_sentencepiece_vocab_matches_stories260k_tokenizer_json() {
    use sramlm::model::gguf::tokenizer::{build, token_type, GgufVocab};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("models/stories260K/tokenizer.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (tok, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = tok.clone();
    }
    let types = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| match i {
            0 => token_type::UNKNOWN,
            1 | 2 => token_type::CONTROL,
            _ if t.starts_with("<0x") => token_type::BYTE,
            _ => token_type::NORMAL,
        })
        .collect();
    let v = GgufVocab {
        model: "llama".into(),
        scores: Some((0..tokens.len()).map(|i| -(i as f32)).collect()),
        tokens,
        token_types: Some(types),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        ..Default::default()
    };
    let from_gguf = build(&v).unwrap_or_else(|e| panic!("{e}"));
    let from_json = Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let fixture = root.join("tests/fixtures/stories260K/stories260K.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let mut texts: Vec<String> = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    texts.extend(
        [
            "The little cat sat on the mat. The end.",
            "café naïve 日本 🙂 ~tabs\tand\nnewlines",
            "<s>Once</s> upon",
            "   leading and trailing   ",
        ]
        .map(String::from),
    );
    for t in &texts {
        let a = from_gguf.encode(t).unwrap();
        let b = from_json.encode(t).unwrap();
        assert_eq!(a, b, "{t:?}");
        assert_eq!(
            from_gguf.decode(&a).unwrap(),
            from_json.decode(&b).unwrap(),
            "{t:?}"
        );
    }
}
