// Softmax attention of one query head over a range of key positions, shared
// by attention.wgsl and sram_step.wgsl's op_attn. Threads score one position
// each (q from qs, keys as vec4), a chunk's max and sum are reduced
// (lib/reduce), then the WG threads split as G = WG / HD4 position groups ×
// HD4 vec4 lanes add p · V[j, .] for their positions and the groups are
// summed; a running softmax (max, sum) carries across chunks of CHUNK
// positions. The last chunk ends without a barrier: a caller that reuses
// sc or vpart after `attend` puts one first.
// Expects consts WG, HD, HD4, CHUNK, NA (output dims per thread), G;
// workgroup arrays qs (the query, HD4 vec4), sc (CHUNK f32), vpart (WG vec4)
// and red (lib/reduce); and from the including shader key4(s, p, i) and
// val4(s, p, lane): chunk i of the key / value at position p of s (zero past
// HD).

// The keys one query head attends to: positions [first, end), those of
// position p at k + (p - first) * stride (values: v + …); pos, the query's.
struct Keys {
    first: u32,
    end: u32,
    k: u32,
    v: u32,
    stride: u32,
    pos: u32,
}

// The positions [first, end) the query at pos attends to among those of the
// block [p0, p1): causal, and with a sliding window (window > 0) only
// pos - window + 1 ..= pos (transformers: kv_idx > q_idx - sliding_window);
// none when the block does not hold the query's KV head (has_head false).
fn key_range(pos: u32, p0: u32, p1: u32, window: u32, has_head: bool) -> vec2<u32> {
    var first = p0;
    if (window > 0u && pos + 1u > window) {
        first = max(p0, pos + 1u - window);
    }
    var end = min(p1, pos + 1u);
    if (!has_head || end < first) {
        end = first;
    }
    return vec2<u32>(first, end);
}

// The unnormalised result over some keys: the scores' max m, the sum l of
// exp(score - m), and acc[k] = Σ exp(score - m) · v[d] for thread lid's
// output dims d = lid + k * WG (k < NA).
struct Attend {
    m: f32,
    l: f32,
    acc: vec4<f32>,
}

fn attend(s: Keys, scale: f32, lid: u32) -> Attend {
    var m_run = -3.0e38;
    var l_run = 0.0;
    var acc = vec4<f32>(0.0);
    for (var c0 = s.first; c0 < s.end; c0 += CHUNK) {
        let n = min(CHUNK, s.end - c0);
        var local_max = -3.0e38;
        for (var j = lid; j < n; j += WG) {
            var d = 0.0;
            for (var i = 0u; i < HD4; i++) {
                d += dot(qs[i], key4(s, c0 + j, i));
            }
            let score = d * scale;
            sc[j] = score;
            local_max = max(local_max, score);
        }
        let m_new = max(m_run, reduce_max(local_max, lid));
        let corr = exp(m_run - m_new);
        var local_sum = 0.0;
        for (var j = lid; j < n; j += WG) {
            let p = exp(sc[j] - m_new);
            sc[j] = p;
            local_sum += p;
        }
        let chunk_sum = reduce_sum(local_sum, lid);
        l_run = l_run * corr + chunk_sum;
        let lane = lid % HD4;
        let grp = lid / HD4;
        var av = vec4<f32>(0.0);
        if (grp < G) {
            for (var j = grp; j < n; j += G) {
                av = fma(vec4<f32>(sc[j]), val4(s, c0 + j, lane), av);
            }
        }
        vpart[lid] = av;
        workgroupBarrier();
        var a = vec4<f32>(0.0);
        for (var g = 0u; g < G; g++) {
            for (var k = 0u; k < NA; k++) {
                let d = lid + k * WG;
                if (d < HD) {
                    a[k] += vpart[g * HD4 + d / 4u][d % 4u];
                }
            }
        }
        acc = acc * corr + a;
        m_run = m_new;
        if (c0 + CHUNK < s.end) {
            workgroupBarrier(); // sc and vpart are rewritten by the next chunk
        }
    }
    return Attend(m_run, l_run, acc);
}
