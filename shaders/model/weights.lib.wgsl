// Weight access for the model kernels that bind `weights` (after codec.lib.wgsl and model.lib.wgsl).
//
// Weights stay in their stored dtype (DTYPE_* of codec.lib.wgsl) and are bound as
// `weights: array<vec4<u32>>` (16-byte loads; buffers are padded to 16 bytes). bf16 is the top half
// of an f32; f16 goes through unpack2x16float, a core WGSL builtin, so no `shader-f16` is needed.
fn weight_word(word: u32) -> u32 {
  return weights[word >> 2u][word & 3u];
}

// Element e (flat index) of the bound weight tensor.
fn weight_at(e: u32, dtype: u32) -> f32 {
  if (dtype == DTYPE_F32) {
    return bitcast<f32>(weight_word(e));
  }
  let w = weight_word(e >> 1u);
  if (dtype == DTYPE_BF16) {
    return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
  }
  let pair = unpack2x16float(w);
  return select(pair.x, pair.y, (e & 1u) == 1u);
}

// The two halves of one word as f32: element 2i in .x, 2i + 1 in .y.
fn halves(w: u32, dtype: u32) -> vec2<f32> {
  if (dtype == DTYPE_BF16) {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
  }
  return unpack2x16float(w);
}
