// The resident-mode litmus (gpu::litmus): two short measurements that decide
// whether workgroups of one dispatch may wait on each other.
//
// `mp` (message passing through a reused slot): workgroup 0 writes round r
// into the slot D, then raises the flag F[2] = r; workgroup 1 waits for it,
// reads the slot and counts the words that are not r (stale reads), then
// acknowledges with F[3] = r; workgroup 0 waits for that before it rewrites
// the slot for round r + 1. With COHERENT the slot is declared `@coherent`.
//
// `cores` (co-residency): every workgroup (the interpreter's size and
// workgroup-memory footprint, W) arrives at the counter F[2], then waits until
// all P[2] have arrived. It completes only if all of them run at once.
//
// Every wait is bounded: thread 0 polls at most P[1] times without seeing
// progress, then raises the error flag F[0] and everything stops waiting.
// F: [0] error flag, [1] stale words, [2] message flag / arrivals,
//    [3] acknowledgement, [4] rounds completed, [5] workgroups that saw all
// P: [0] rounds, [1] spin limit, [2] workgroups expected, [3] stride

@group(0) @binding(0) var<storage, read_write> F: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read> P: array<u32>;
#ifdef CORES
var<workgroup> W: array<u32, {{W_WORDS}}>;
#else
#ifdef COHERENT
@group(0) @binding(2) @coherent var<storage, read_write> D: array<u32>;
#else
@group(0) @binding(2) var<storage, read_write> D: array<u32>;
#endif
#endif

const WG: u32 = 64u;
// Words of the slot (each thread writes and reads SLOT / WG of them).
const SLOT: u32 = 1024u;

var<workgroup> ok: u32;

// Thread 0 waits until F[idx] >= want, bounded; the whole workgroup learns
// whether it got there (false: the error flag is up).
fn wait_at_least(idx: u32, want: u32, lid: u32) -> bool {
    if (lid == 0u) {
        var polls = 0u;
        var seen = atomicLoad(&F[idx]);
        var good = 1u;
        let limit = P[1];
        loop {
            // A read-modify-write, not atomicLoad: lavapipe (LLVM) hoists a
            // relaxed load out of the loop and never sees another
            // workgroup's update (measured; the probe then found 1).
            let now = atomicOr(&F[idx], 0u);
            if (now >= want) {
                break;
            }
            if (now != seen) {
                seen = now;
                polls = 0u;
            }
            polls++;
            if ((polls & 255u) == 0u) {
                if (polls >= limit || atomicLoad(&F[0]) != 0u) {
                    atomicMax(&F[0], 1u);
                    good = 0u;
                    break;
                }
            }
        }
        ok = good;
    }
    return workgroupUniformLoad(&ok) == 1u;
}

#ifndef CORES
@compute @workgroup_size(64)
fn mp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rounds = P[0];
    if (wid.x == 0u) {
        for (var r = 1u; r <= rounds; r++) {
            if (!wait_at_least(3u, r - 1u, lid)) {
                return;
            }
            // Threads write words another thread of the reader will read.
            for (var i = lid; i < SLOT; i += WG) {
                D[i] = r;
            }
            storageBarrier();
            if (lid == 0u) {
                atomicStore(&F[2], r);
            }
        }
    } else if (wid.x == 1u) {
        for (var r = 1u; r <= rounds; r++) {
            if (!wait_at_least(2u, r, lid)) {
                return;
            }
            storageBarrier();
            var stale = 0u;
            // Words another thread of the writer wrote.
            for (var i = lid; i < SLOT; i += WG) {
                if (D[(i + WG / 2u) % SLOT] != r) {
                    stale++;
                }
            }
            if (stale != 0u) {
                atomicAdd(&F[1], stale);
            }
            storageBarrier();
            if (lid == 0u) {
                atomicStore(&F[4], r);
                atomicStore(&F[3], r);
            }
        }
    }
}
#endif

#ifdef CORES
@compute @workgroup_size(64)
fn cores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // With a stride P[3] > 1 only every P[3]-th workgroup takes part.
    if (P[3] > 1u && wid.x % P[3] != 0u) {
        return;
    }
    // Touch the whole footprint so it is really allocated.
    for (var i = lid; i < {{W_WORDS}}u; i += WG) {
        W[i] = wid.x + i;
    }
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&F[2], 1u);
    }
    if (!wait_at_least(2u, P[2], lid)) {
        return;
    }
    if (lid == 0u) {
        let last = {{W_WORDS}}u - 1u;
        if (W[last] == wid.x + last) {
            atomicAdd(&F[5], 1u);
        }
    }
}
#endif
