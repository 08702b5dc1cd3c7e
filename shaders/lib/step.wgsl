// Per-step values every kernel reads (one uniform buffer per executor or chip,
// written before each submission). Mirrors `kernels::Step` in Rust.
struct Step {
    n_tokens: u32,
    pos0: u32,
    out_row0: u32,
    n_out_rows: u32,
    kv_base: u32, // first KV-cache row of this sequence (sequence × context)
    per_row: u32, // 1: batched decode, row t is one token of its own sequence (attention's row table)
    _s1: u32,
    _s2: u32,
}
