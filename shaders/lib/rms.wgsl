// RMSNorm's scale: 1 / sqrt(mean(x^2) + eps) over the n floats of
// RMS_SRC[base ..] (a define: the array the including shader reads), summed by
// the whole workgroup. PyTorch (LlamaRMSNorm):
// torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps).
// Included (after lib/reduce) by rmsnorm.wgsl, head_norm.wgsl (RMS_SRC=X) and
// sram_step.wgsl's op_norm / op_head_norm (RMS_SRC=A).

fn rms_inv(base: u32, n: u32, eps: f32, lid: u32) -> f32 {
    var ss = 0.0;
    for (var i = lid; i < n; i += WG) {
        let v = {{RMS_SRC}}[base + i];
        ss = fma(v, v, ss);
    }
    return inverseSqrt(reduce_sum(ss, lid) / f32(n) + eps);
}
