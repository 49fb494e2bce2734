/** The demo's recipe: the paper's TIES setting (k 0.8 trimmed, so density 0.2; lambda 1.0) on the tiny models. */
export const DEMO_RECIPE = `merge_method: ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
    parameters:
      weight: 1.0
      density: 0.2
parameters:
  lambda: 1.0
dtype: bfloat16
`;
