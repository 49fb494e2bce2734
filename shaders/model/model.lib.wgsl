// Shared by the model kernels (src/model/gpu/kernels.ts prepends it, after codec.lib.wgsl).
//
// Step: what changes from one forward step to the next, written once per step into one uniform
// buffer, so every bind group of the model is made once at load time. `tokens` rows are computed,
// at positions start .. start + tokens - 1 of the sequence.
struct Step {
  tokens: u32,
  start: u32,
  // Sampling of the token after the last row (sample.wgsl): seed, the position of the sampled
  // token (the Philox counter), temperature (0 = greedy), top-p, and how many log-probs to report.
  seed: u32,
  sample_position: u32,
  temperature: f32,
  top_p: f32,
  top_logprobs: u32,
  _pad: u32,
}

fn group_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}
