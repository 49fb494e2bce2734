// C = op(A) * B for one block of a row-tiled product (src/gpu/matmul.ts), f32 accumulation.
//
// op(A) is A (row i of A is output row i) or, with TRANS_A, A^T (column i of A is output row i).
// Element offsets and row strides come in the uniforms, so one pipeline serves every shape and
// every pair of row tiles: op(A)[i, p] = a[a_offset + i * lda + p] (or a[a_offset + p * lda + i]),
// B[p, j] = b[b_offset + p * ldb + j], C[i, j] = c[c_offset + z * split_stride + i * ldc + j].
//
// Workgroups x and y number the TILE_M x TILE_N output blocks (folded to the dispatch limit);
// workgroup z sums the shared indices [z * k_chunk, min(k, (z + 1) * k_chunk)) (split-K): a thin
// output with a long shared dimension (a Gram matrix) still fills the GPU; the partial products are
// added by matmul-sum-splits.wgsl in split order. With `accumulate`, the block adds to C instead of
// overwriting it (shared dimensions cut into several row tiles).
//
// Each workgroup computes a TILE_M x TILE_N block from TILE_K-deep slabs of op(A) and B staged in
// workgroup memory. Invocation (x, y) owns rows row0 + y + i * WG_M (i < 4, strided so that
// neighbouring invocations read neighbouring words of the A slab) and the four adjacent columns
// col0 + 4x .. 4x + 3 (one vec4 of the B slab). The 4 x 4 accumulators are four vec4 registers,
// written out by hand: a dynamically indexed private array ends up in memory on some compilers.
// Out-of-range elements load as 0, so no shape needs to be a multiple of a tile.

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TILE_K: u32 = 16u;
override TRANS_A: bool = false;

// Outputs per invocation: 4 rows x 4 columns (src/gpu/matmul.ts's THREAD_BLOCK).
override TILE_M: u32 = WG_M * 4u;
override TILE_N: u32 = WG_N * 4u;

struct Params {
  m: u32,
  n: u32,
  k: u32,
  k_chunk: u32,
  a_offset: u32,
  lda: u32,
  b_offset: u32,
  ldb: u32,
  c_offset: u32,
  ldc: u32,
  split_stride: u32,
  accumulate: u32,
  // Output blocks along columns, and in all (rows x columns); the block grid may be folded.
  col_blocks: u32,
  blocks: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// a_slab[kk * TILE_M + i] = op(A)[row0 + i, k0 + kk];
// b_slab[kk * WG_N + x] = B[k0 + kk, col0 + 4x .. 4x + 3].
var<workgroup> a_slab: array<f32, TILE_K * TILE_M>;
var<workgroup> b_slab: array<vec4<f32>, TILE_K * WG_N>;

fn load_a(row: u32, kk: u32) -> f32 {
  if (TRANS_A) {
    return a[params.a_offset + kk * params.lda + row];
  }
  return a[params.a_offset + row * params.lda + kk];
}

fn load_b(kk: u32, col: u32, k_end: u32) -> f32 {
  if (col < params.n && kk < k_end) {
    return b[params.b_offset + kk * params.ldb + col];
  }
  return 0.0;
}

fn store(row: u32, col0: u32, split: u32, v: vec4<f32>) {
  if (row >= params.m) {
    return;
  }
  for (var j = 0u; j < 4u; j = j + 1u) {
    let col = col0 + j;
    if (col < params.n) {
      let o = params.c_offset + split * params.split_stride + row * params.ldc + col;
      if (params.accumulate != 0u) {
        c[o] = c[o] + v[j];
      } else {
        c[o] = v[j];
      }
    }
  }
}

@compute @workgroup_size(WG_N, WG_M)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let block = wid.x + wid.y * nwg.x;
  if (block >= params.blocks) {
    return;
  }
  let row0 = (block / params.col_blocks) * TILE_M;
  let col0 = (block % params.col_blocks) * TILE_N;
  let k_begin = wid.z * params.k_chunk;
  let k_end = min(params.k, k_begin + params.k_chunk);
  let threads = WG_M * WG_N;
  var acc0 = vec4<f32>();
  var acc1 = vec4<f32>();
  var acc2 = vec4<f32>();
  var acc3 = vec4<f32>();
  for (var k0 = k_begin; k0 < k_end; k0 = k0 + TILE_K) {
    for (var e = li; e < TILE_M * TILE_K; e = e + threads) {
      // Consecutive invocations read consecutive addresses of A in either layout.
      var i: u32;
      var kk: u32;
      if (TRANS_A) {
        i = e % TILE_M;
        kk = e / TILE_M;
      } else {
        kk = e % TILE_K;
        i = e / TILE_K;
      }
      var v = 0.0;
      if (row0 + i < params.m && k0 + kk < k_end) {
        v = load_a(row0 + i, k0 + kk);
      }
      a_slab[kk * TILE_M + i] = v;
    }
    for (var e = li; e < TILE_K * WG_N; e = e + threads) {
      let x = e % WG_N;
      let kk = k0 + e / WG_N;
      let col = col0 + 4u * x;
      b_slab[e] = vec4<f32>(
        load_b(kk, col, k_end),
        load_b(kk, col + 1u, k_end),
        load_b(kk, col + 2u, k_end),
        load_b(kk, col + 3u, k_end),
      );
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
      let bv = b_slab[kk * WG_N + lid.x];
      let a0 = kk * TILE_M + lid.y;
      acc0 = acc0 + a_slab[a0] * bv;
      acc1 = acc1 + a_slab[a0 + WG_M] * bv;
      acc2 = acc2 + a_slab[a0 + 2u * WG_M] * bv;
      acc3 = acc3 + a_slab[a0 + 3u * WG_M] * bv;
    }
    workgroupBarrier();
  }
  let col = col0 + 4u * lid.x;
  store(row0 + lid.y, col, wid.z, acc0);
  store(row0 + lid.y + WG_M, col, wid.z, acc1);
  store(row0 + lid.y + 2u * WG_M, col, wid.z, acc2);
  store(row0 + lid.y + 3u * WG_M, col, wid.z, acc3);
}
