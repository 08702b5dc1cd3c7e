//! WGSL sources (one file per kernel under `shaders/`, same stem as the Rust op),
//! their type/feature variants, and the naga-based workgroup-memory check.
//!
//! Variants use a tiny preprocessor: `#ifdef NAME` / `#ifndef NAME` / `#else` /
//! `#endif` lines, and `{{NAME}}` replaced by a define's value; `#include A,B
//! as _SUFFIX with DEF1 DEF2` includes the libraries A and B with extra
//! defines and every function and struct they declare renamed `NAME_SUFFIX`
//! (one decoder per weight encoding in one module). Tile and slice
//! sizes that shape `var<workgroup>` arrays are substituted this way so naga
//! can measure the footprint before the pipeline is built; other tuning knobs
//! are WGSL `override`s set through `constants`.

macro_rules! shaders {
    ($($variant:ident => $file:literal),* $(,)?) => {
        /// Every WGSL file sramlm compiles.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Shader { $($variant),* }

        impl Shader {
            pub const ALL: &'static [Shader] = &[$(Shader::$variant),*];
            pub fn name(self) -> &'static str {
                match self { $(Shader::$variant => $file),* }
            }
            pub fn raw(self) -> &'static str {
                match self {
                    $(Shader::$variant => include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file, ".wgsl"))),*
                }
            }
        }
    };
}

shaders! {
    Embed => "embed",
    Rmsnorm => "rmsnorm",
    Matmul => "matmul",
    Rope => "rope",
    Attention => "attention",
    SiluMul => "silu_mul",
    BiasAdd => "bias_add",
    HeadNorm => "head_norm",
    Argmax => "argmax",
    Topk => "topk",
    SramMatmul => "sram_matmul",
    SramStep => "sram_step",
    Copy => "copy",
    Penalty => "penalty",
    Litmus => "litmus",
}

/// Entry point, defines (`NAME` or `NAME=VALUE`) and override constants.
#[derive(Clone, Debug, Default)]
pub struct ShaderVariant {
    pub entry: &'static str,
    pub defines: Vec<String>,
    pub constants: Vec<(&'static str, f64)>,
}

impl ShaderVariant {
    pub fn new(entry: &'static str) -> Self {
        ShaderVariant {
            entry,
            ..Default::default()
        }
    }
    pub fn define(mut self, d: impl Into<String>) -> Self {
        self.defines.push(d.into());
        self
    }
    pub fn constant(mut self, name: &'static str, v: f64) -> Self {
        self.constants.push((name, v));
        self
    }
    fn value_of(&self, name: &str) -> Option<&str> {
        self.defines.iter().find_map(|d| match d.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if d == name => Some(""),
            _ => None,
        })
    }
    fn is_defined(&self, name: &str) -> bool {
        self.value_of(name).is_some()
    }
}

impl Shader {
    /// The WGSL text for one variant.
    pub fn source(self, v: &ShaderVariant) -> String {
        preprocess(self.raw(), v)
    }
}

pub fn preprocess(src: &str, v: &ShaderVariant) -> String {
    let mut out = String::with_capacity(src.len());
    // Stack of (this branch active, any branch taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |s: &Vec<(bool, bool)>| s.iter().all(|&(a, _)| a);
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("#include ") {
            if active(&stack) {
                out.push_str(&include_line(name.trim(), v));
            }
            continue;
        }
        if let Some(name) = t.strip_prefix("#ifdef ") {
            let on = v.is_defined(name.trim());
            stack.push((on, on));
            out.push('\n');
            continue;
        }
        if let Some(name) = t.strip_prefix("#ifndef ") {
            let on = !v.is_defined(name.trim());
            stack.push((on, on));
            out.push('\n');
            continue;
        }
        if t.starts_with("#else") {
            if let Some(top) = stack.last_mut() {
                top.0 = !top.1;
                top.1 = true;
            }
            out.push('\n');
            continue;
        }
        if t.starts_with("#endif") {
            stack.pop();
            out.push('\n');
            continue;
        }
        if !active(&stack) {
            out.push('\n');
            continue;
        }
        let mut l = line.to_string();
        while let Some(start) = l.find("{{") {
            let Some(end) = l[start..].find("}}") else {
                break;
            };
            let name = &l[start + 2..start + end];
            let val = v.value_of(name).unwrap_or("").to_string();
            l.replace_range(start..start + end + 2, &val);
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// `#include` of `libs [as SUFFIX [with DEFINES...]]`: the libraries
/// (comma-separated) preprocessed with the extra defines, and with a suffix,
/// every `fn` / `struct` they declare renamed with it.
fn include_line(spec: &str, v: &ShaderVariant) -> String {
    let mut words = spec.split_whitespace();
    let libs = words.next().unwrap_or("");
    let mut suffix = None;
    let mut v = v.clone();
    while let Some(w) = words.next() {
        match w {
            "as" => suffix = words.next(),
            "with" => {}
            d => v = v.define(d),
        }
    }
    let text: String = libs
        .split(',')
        .map(|l| preprocess(include(l), &v))
        .collect();
    match suffix {
        Some(sfx) => rename_declared(&text, sfx),
        None => text,
    }
}

/// `src` with every function and struct it declares (and every use of
/// their names) renamed `NAME{suffix}`.
fn rename_declared(src: &str, suffix: &str) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = std::collections::HashSet::new();
    for l in src.lines() {
        let t = l.trim_start();
        for kw in ["fn ", "struct "] {
            if let Some(rest) = t.strip_prefix(kw) {
                let n: String = rest.chars().take_while(|&c| ident(c)).collect();
                names.insert(n);
            }
        }
    }
    let mut out = String::with_capacity(src.len() + 1024);
    let mut word = String::new();
    let mut prev_dot = false;
    let flush = |word: &mut String, out: &mut String, prev_dot: bool| {
        if !word.is_empty() {
            out.push_str(word);
            // A struct field access (`.x`) is not a declaration's name.
            if !prev_dot && names.contains(word.as_str()) {
                out.push_str(suffix);
            }
            word.clear();
        }
    };
    for c in src.chars() {
        if ident(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out, prev_dot);
            prev_dot = c == '.';
            out.push(c);
        }
    }
    flush(&mut word, &mut out, prev_dot);
    out
}

/// Shared WGSL snippets (`#include NAME`), `shaders/lib/NAME.wgsl`.
fn include(name: &str) -> &'static str {
    macro_rules! libs {
        ($($n:literal),* $(,)?) => {
            match name {
                $($n => include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/lib/", $n, ".wgsl")),)*
                _ => "",
            }
        };
    }
    libs!(
        "wdecode",
        "step",
        "sram_dot",
        "reduce",
        "rms",
        "select",
        "attend",
        "rope_pair",
        "q41x",
    )
}

/// Bytes of `var<workgroup>` storage the module declares (naga's layout rules).
pub fn workgroup_bytes(source: &str, _v: &ShaderVariant) -> Result<u64, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let ctx = module.to_ctx();
    let mut total = 0u64;
    for (_, var) in module.global_variables.iter() {
        if var.space == naga::AddressSpace::WorkGroup {
            let size = module.types[var.ty]
                .inner
                .try_size(ctx)
                .ok_or_else(|| format!("workgroup variable {:?} has no fixed size", var.name))?;
            // Each variable starts at a 16-byte boundary on most drivers.
            total += (size as u64).div_ceil(16) * 16;
        }
    }
    Ok(total)
}

/// Parses and validates a WGSL source with naga (GPU-free).
pub fn validate(source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    validator
        .validate(&module)
        .map_err(|e| e.emit_to_string(source))?;
    Ok(())
}
