/**
 * Reading mergekit YAML recipes. Accepts what mergekit's MergeConfiguration accepts for a `models:`
 * merge and refuses, with the file, YAML path and line, anything this engine would not honour:
 * mergekit ignores unknown keys, but here an ignored key could silently change the result.
 */

import { type Document, isNode, LineCounter, parseDocument } from 'yaml';
import { dtypeFromRecipe, type FloatDType } from '../formats/dtype';
import { readAimBlock } from './aim';
import { recipeNodeFault, recipeTextOverLimit } from './limits';
import { normalizeModelRef } from './model-ref';
import {
  type ConditionalSetting,
  formatPath,
  type MergeRecipe,
  type ParameterBlock,
  type ParameterSetting,
  RecipeError,
  type RecipeModel,
  recordOrigin,
  type ScalarSetting,
  type YamlPath,
} from './recipe';

/** Top-level keys of mergekit's MergeConfiguration that this engine reads. */
const ACCEPTED_KEYS = [
  'merge_method',
  'base_model',
  'models',
  'parameters',
  'dtype',
  'out_dtype',
  'tokenizer_source',
  'name',
  'aim',
] as const;

/** What pydantic's float parsing accepts from a quoted number in mergekit. */
const NUMERIC_STRING = /^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$/;

const SETTING_SHAPES =
  'a number, a list of numbers (a gradient over the layers) or a list of {filter, value} conditions';

type Json = unknown;

function isMapping(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

function describeValue(v: Json): string {
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return 'a list';
  if (isMapping(v)) return 'a mapping';
  if (v instanceof Date) return `the date ${v.toISOString().slice(0, 10)}`;
  return 'a value of an unsupported YAML type';
}

class RecipeReader {
  constructor(
    readonly source: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /** Line of the node at `path`, or of its nearest ancestor present in the document. */
  lineOf(path: YamlPath): number | undefined {
    for (let p = path; ; p = p.slice(0, -1)) {
      const node = p.length === 0 ? this.doc.contents : this.doc.getIn(p, true);
      if (isNode(node) && node.range) return this.lines.linePos(node.range[0]).line;
      if (p.length === 0) return undefined;
    }
  }

  fail(path: YamlPath, detail: string): never {
    throw new RecipeError(detail, { source: this.source, path: formatPath(path), line: this.lineOf(path) });
  }

  string(v: Json, path: YamlPath, what: string): string {
    if (typeof v !== 'string' || v.trim() === '')
      this.fail(path, `${what} must be a non-empty string, not ${describeValue(v)}`);
    return v;
  }

  /**
   * A model reference: `path`, `path@revision` (mergekit's ModelPath: the one `@` starts a hub
   * revision), or `{model: path}` / `{model: {path: ..., revision: ...}}`, returned as the string
   * `path` or `path@revision`; LoRA refused.
   */
  modelRef(v: Json, path: YamlPath): string {
    if (typeof v === 'string') {
      if (v.includes('+')) {
        this.fail(
          path,
          `LoRA adapters are not supported (${JSON.stringify(v)} reads as model+adapter); ` +
            'merge the adapter into its model first and refer to the result',
        );
      }
      return this.modelPath(v, path);
    }
    if (!isMapping(v)) this.fail(path, `a model reference must be a string, not ${describeValue(v)}`);
    for (const [key, inner] of Object.entries(v)) {
      if (key === 'model') continue;
      if (inner === null) continue;
      if (key === 'lora') {
        this.fail([...path, key], 'LoRA adapters are not supported; merge the adapter into its model first');
      }
      if (key === 'override_architecture') {
        this.fail(
          [...path, key],
          "override_architecture is not supported; the architecture comes from the model's config.json",
        );
      }
      this.fail([...path, key], `unknown key in a model reference; accepted: model, lora (null)`);
    }
    if (!('model' in v)) this.fail(path, 'a model reference mapping needs `model:`');
    const inner = v.model;
    const innerPath = [...path, 'model'];
    if (typeof inner === 'string') return this.modelPath(inner, innerPath);
    if (!isMapping(inner))
      this.fail(innerPath, `must be a string or {path: ...}, not ${describeValue(inner)}`);
    for (const key of Object.keys(inner)) {
      if (key === 'path' || key === 'revision') continue;
      this.fail([...innerPath, key], 'unknown key in a model path; accepted: path, revision');
    }
    // mergekit splits `@revision` only off plain strings; a `path:` is taken whole.
    const modelPath = this.string(inner.path, [...innerPath, 'path'], 'a model path');
    const revision = inner.revision ?? null;
    if (revision === null) return modelPath;
    const revisionText = this.string(revision, [...innerPath, 'revision'], 'a revision');
    if (modelPath.includes('@') || revisionText.includes('@')) {
      this.fail(
        [...innerPath, 'revision'],
        `a revision cannot be given for a path or revision that contains @ (${JSON.stringify(modelPath)}, ${JSON.stringify(revisionText)})`,
      );
    }
    return `${modelPath}@${revisionText}`;
  }

  private modelPath(v: string, path: YamlPath): string {
    const ref = this.string(v, path, 'a model reference');
    const at = ref.indexOf('@');
    if (at >= 0 && ref.indexOf('@', at + 1) >= 0) {
      this.fail(path, `${JSON.stringify(ref)} has more than one @; write path@revision with one @`);
    }
    if (at === ref.length - 1) this.fail(path, `${JSON.stringify(ref)} names no revision after the @`);
    return ref;
  }

  dtype(v: Json, path: YamlPath): FloatDType {
    const name = this.string(v, path, 'a dtype');
    const dtype = dtypeFromRecipe(name.replace(/^torch\./, ''));
    if (!dtype)
      this.fail(path, `unsupported dtype ${JSON.stringify(name)}; use bfloat16, float16 or float32`);
    return dtype;
  }

  /** A parameter value in one of the shapes mergekit's ParameterSetting takes. */
  setting(v: Json, path: YamlPath): ParameterSetting {
    if (Array.isArray(v)) {
      if (v.length === 0) this.fail(path, `an empty list has no value; write ${SETTING_SHAPES}`);
      if (v.every(isMapping)) return v.map((cond, i) => this.condition(cond, [...path, i]));
      if (v.some(isMapping)) {
        this.fail(path, 'a list must hold only numbers (a gradient) or only {filter, value} conditions');
      }
      return this.gradient(v, path);
    }
    if (isMapping(v)) {
      // mergekit parses a lone condition but fails when it evaluates one.
      this.fail(
        path,
        'a {filter, value} condition must be written as a list item (- filter: ... value: ...)',
      );
    }
    return this.scalar(v, path);
  }

  private scalar(v: Json, path: YamlPath): ScalarSetting {
    if (typeof v === 'boolean') return v;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) this.fail(path, `must be a finite number, not ${v}`);
      return v;
    }
    if (typeof v === 'string' && NUMERIC_STRING.test(v)) return Number(v);
    this.fail(path, `must be ${SETTING_SHAPES}; got ${describeValue(v)}`);
  }

  /** mergekit reads every entry of a list as a float, booleans included (true -> 1, false -> 0). */
  private gradient(v: readonly Json[], path: YamlPath): number[] {
    if (v.length === 0) this.fail(path, `an empty list has no value; write ${SETTING_SHAPES}`);
    return v.map((entry, i) => {
      if (Array.isArray(entry)) this.fail([...path, i], 'a gradient entry must be a number, not a list');
      const value = this.scalar(entry, [...path, i]);
      return typeof value === 'boolean' ? Number(value) : value;
    });
  }

  private condition(v: Record<string, Json>, path: YamlPath): ConditionalSetting {
    for (const key of Object.keys(v)) {
      if (key !== 'filter' && key !== 'value') {
        this.fail([...path, key], 'unknown key in a condition; a condition has only filter and value');
      }
    }
    if (!('value' in v)) this.fail(path, 'a condition needs a value');
    const valuePath = [...path, 'value'];
    const raw = v.value;
    if (Array.isArray(raw) && raw.some((e) => isMapping(e) || Array.isArray(e))) {
      this.fail(valuePath, 'a condition value must be a number or a list of numbers; conditions do not nest');
    }
    if (isMapping(raw)) this.fail(valuePath, 'a condition value must be a number or a list of numbers');
    const value = Array.isArray(raw) ? this.gradient(raw, valuePath) : this.scalar(raw, valuePath);
    const filter = v.filter;
    if (filter === undefined || filter === null) return { value };
    if (typeof filter !== 'string') {
      this.fail(
        [...path, 'filter'],
        `a filter must be a string (part of a tensor name), not ${describeValue(filter)}`,
      );
    }
    return { filter, value };
  }

  parameterBlock(v: Json, path: YamlPath): ParameterBlock {
    if (v === null || v === undefined) return {};
    if (!isMapping(v))
      this.fail(path, `parameters must be a mapping of name: value, not ${describeValue(v)}`);
    const block: Record<string, ParameterSetting> = {};
    for (const [name, value] of Object.entries(v)) {
      if (value === null) this.fail([...path, name], `parameter ${name} has no value`);
      block[name] = this.setting(value, [...path, name]);
    }
    return block;
  }

  models(v: Json, path: YamlPath): RecipeModel[] {
    if (!Array.isArray(v) || v.length === 0) {
      this.fail(path, 'models must be a list with at least one `- model: ...` entry');
    }
    const seen = new Map<string, { model: string; index: number }>();
    return v.map((entry, i) => {
      const entryPath = [...path, i];
      if (!isMapping(entry)) this.fail(entryPath, `each entry must be a mapping like - model: org/name`);
      for (const key of Object.keys(entry)) {
        if (key === 'model' || key === 'parameters') continue;
        const hint = key === 'layer_range' ? ' (layer ranges belong to slices, which are not supported)' : '';
        this.fail([...entryPath, key], `unknown key in a model entry${hint}; accepted: model, parameters`);
      }
      if (!('model' in entry)) this.fail(entryPath, 'a model entry needs `model:`');
      const model = this.modelRef(entry.model, [...entryPath, 'model']);
      // mergekit keys inputs by model, so a second entry of the same model would be dropped. `X`,
      // `X/` and `./X` are one folder.
      const earlier = seen.get(normalizeModelRef(model));
      if (earlier) {
        this.fail(
          [...entryPath, 'model'],
          `model ${model} is listed more than once` +
            (earlier.model === model ? '' : ` (models[${earlier.index}] names it as ${earlier.model})`),
        );
      }
      seen.set(normalizeModelRef(model), { model, index: i });
      return { model, parameters: this.parameterBlock(entry.parameters, [...entryPath, 'parameters']) };
    });
  }
}

/** Parse mergekit recipe text. `source` names the file in error messages. */
export function parseRecipe(text: string, source = 'recipe'): MergeRecipe {
  const overLimit = recipeTextOverLimit(text);
  if (overLimit) throw new RecipeError(overLimit, { source });
  const lines = new LineCounter();
  // PyYAML, which mergekit uses, reads YAML 1.1 (`yes`/`on` are booleans).
  const doc = parseDocument(text, {
    version: '1.1',
    uniqueKeys: true,
    prettyErrors: false,
    lineCounter: lines,
  });
  const reader: RecipeReader = new RecipeReader(source, doc, lines);
  const fault = doc.errors[0];
  if (fault) {
    const detail =
      fault.code === 'MULTIPLE_DOCS'
        ? 'holds more than one YAML document; a recipe is a single document'
        : fault.code === 'DUPLICATE_KEY'
          ? 'a key appears twice in the same mapping'
          : `invalid YAML: ${fault.message}`;
    throw new RecipeError(detail, { source, line: lines.linePos(fault.pos[0]).line });
  }
  const nodeFault = recipeNodeFault(doc.contents);
  if (nodeFault) {
    const at = nodeFault.node.range?.[0];
    throw new RecipeError(nodeFault.detail, {
      source,
      path: formatPath(nodeFault.path),
      line: at === undefined ? undefined : lines.linePos(at).line,
    });
  }
  let root: Json;
  try {
    root = doc.toJS();
  } catch (e) {
    throw new RecipeError(`invalid YAML: ${(e as Error).message}`, { source });
  }
  if (root === null || root === undefined)
    reader.fail([], 'is empty; a recipe needs merge_method and models');
  if (!isMapping(root)) reader.fail([], `must be a mapping of recipe keys, not ${describeValue(root)}`);

  let mergeMethod: string | undefined;
  let models: RecipeModel[] | undefined;
  const recipe: {
    -readonly [K in keyof MergeRecipe]: MergeRecipe[K];
  } = { mergeMethod: '', models: [], parameters: {} };

  for (const [key, value] of Object.entries(root)) {
    const path = [key];
    switch (key) {
      case 'merge_method':
        mergeMethod = reader.string(value, path, 'merge_method');
        break;
      case 'base_model':
        if (value !== null) recipe.baseModel = reader.modelRef(value, path);
        break;
      case 'models':
        models = reader.models(value, path);
        break;
      case 'parameters':
        recipe.parameters = reader.parameterBlock(value, path);
        break;
      case 'dtype':
        if (value !== null) recipe.dtype = reader.dtype(value, path);
        break;
      case 'out_dtype':
        if (value !== null) recipe.outDtype = reader.dtype(value, path);
        break;
      case 'tokenizer_source':
        if (value === 'union') {
          reader.fail(path, 'tokenizer_source: union (a merged vocabulary) is not supported; use base');
        }
        if (value !== null && value !== 'base') {
          // mergekit remaps every model's embeddings onto another tokenizer's vocabulary; without
          // that remapping the copied tokenizer would not match the merged embeddings.
          reader.fail(
            path,
            `tokenizer_source: ${JSON.stringify(value)} needs embeddings remapped to that vocabulary, which ` +
              'l2s-merge does not do; use tokenizer_source: base (or leave it out)',
          );
        }
        if (value !== null) recipe.tokenizerSource = 'base';
        break;
      case 'aim':
        if (value !== null) recipe.aim = readAimBlock(value, path, (p, detail) => reader.fail(p, detail));
        break;
      case 'name':
        // mergekit-mega's name for one document of several; it does not change the merge.
        break;
      case 'tokenizer':
        if (value !== null) {
          reader.fail(
            path,
            'the tokenizer: block (vocabulary merging, added tokens) is not supported; ' +
              'use tokenizer_source: base',
          );
        }
        break;
      case 'chat_template':
        if (value !== null) {
          reader.fail(
            path,
            "chat_template is not supported; remove it to keep the tokenizer source's template",
          );
        }
        break;
      case 'slices':
      case 'modules':
        if (value !== null) {
          reader.fail(
            path,
            `${key} (layer ranges, per-module merges) are not supported; list whole models under models:`,
          );
        }
        break;
      default:
        reader.fail(path, `unknown key ${key}; accepted: ${ACCEPTED_KEYS.join(', ')}`);
    }
  }
  if (mergeMethod === undefined) reader.fail([], 'merge_method is missing (e.g. merge_method: ties)');
  if (models === undefined) reader.fail([], 'models is missing: list the models to merge as - model: ...');
  recipe.mergeMethod = mergeMethod;
  recipe.models = models;
  const base = recipe.baseModel;
  const sameAsBase = models.findIndex(
    (m) => base !== undefined && m.model !== base && normalizeModelRef(m.model) === normalizeModelRef(base),
  );
  if (sameAsBase >= 0) {
    reader.fail(
      ['base_model'],
      `${base} names the same model as models[${sameAsBase}] (${models[sameAsBase].model}); write it the same way in both places`,
    );
  }
  recordOrigin(recipe, { source, lineOf: (path) => reader.lineOf(path) });
  return recipe;
}
