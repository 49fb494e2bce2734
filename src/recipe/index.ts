export {
  type AimSettings,
  CALIBRATION_DEFAULTS,
  type CalibrationSettings,
  type CalibrationSource,
} from './aim';
export { MAX_LIST_ENTRIES, MAX_RECIPE_CHARS, MAX_RECIPE_DEPTH } from './limits';
export {
  type HubModelRef,
  isHubRepoId,
  mergeInputModels,
  normalizeModelRef,
  parseHubModelRef,
  referencedModels,
} from './model-ref';
export { parseRecipe } from './parse';
export {
  type ConditionalSetting,
  type GradientSetting,
  type MergeRecipe,
  type ParameterBlock,
  type ParameterSetting,
  RecipeError,
  type RecipeModel,
  type ScalarSetting,
} from './recipe';
export { resolveParams, resolveSetting, type TensorParams, tensorPosition } from './resolve';
export { recipeToYaml } from './to-yaml';
export { validateRecipe } from './validate';
