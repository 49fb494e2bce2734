/** Model references in a recipe: hub repo ids versus local folders, and which models a merge reads. */

import type { MergeRecipe } from './recipe';

/** Longest repo name the hub accepts (huggingface_hub's REPO_ID_REGEX). */
const MAX_REPO_NAME_LENGTH = 96;

/** One hub name part: word characters, `.` and `-`, starting and ending with a word character. */
const HUB_NAME_PART = /^[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?$/;

/**
 * True when `ref` has the form of a hub repo id, `org/name`, as the hub allows it (no `--` or `..`,
 * no `.git` suffix). A relative folder such as `models/qwen` has the same form: like mergekit, callers
 * that can see a file system should try the local folder first.
 */
export function isHubRepoId(ref: string): boolean {
  const parts = ref.split('/');
  if (parts.length !== 2) return false;
  const [namespace, name] = parts;
  if (name.length > MAX_REPO_NAME_LENGTH) return false;
  if (!HUB_NAME_PART.test(namespace) || !HUB_NAME_PART.test(name)) return false;
  if (ref.includes('--') || ref.includes('..')) return false;
  return !ref.endsWith('.git');
}

/** A hub model as mergekit writes it: `org/name`, or `org/name@revision` (a branch, tag or commit). */
export interface HubModelRef {
  repo: string;
  /** As written after the `@`; undefined when the reference has none (the hub's default branch). */
  revision?: string;
}

/**
 * The hub repo and revision a reference names, or undefined when it is not a hub id. As mergekit's
 * ModelPath, the revision is what follows the one `@`; a folder that exists under the whole string
 * or under the part before `@` is the caller's to try first.
 */
export function parseHubModelRef(ref: string): HubModelRef | undefined {
  const at = ref.indexOf('@');
  if (at < 0) return isHubRepoId(ref) ? { repo: ref } : undefined;
  const repo = ref.slice(0, at);
  const revision = ref.slice(at + 1);
  if (revision === '' || revision.includes('@') || !isHubRepoId(repo)) return undefined;
  return { repo, revision };
}

/**
 * A reference with its path spelling made canonical, for telling whether two references name the
 * same model: `X`, `X/`, `./X` and `a/../X` are one folder. Hub ids are unchanged by this.
 */
export function normalizeModelRef(ref: string): string {
  const absolute = ref.startsWith('/');
  const parts: string[] = [];
  for (const part of ref.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length > 0 && parts[parts.length - 1] !== '..') parts.pop();
      else if (!absolute) parts.push(part);
      continue;
    }
    parts.push(part);
  }
  const joined = parts.join('/');
  return absolute ? `/${joined}` : joined || '.';
}

/** Every model whose weights the merge reads: the base first, then `models` in order, each once. */
export function referencedModels(recipe: MergeRecipe): string[] {
  const seen = new Set<string>();
  if (recipe.baseModel !== undefined) seen.add(recipe.baseModel);
  for (const entry of recipe.models) seen.add(entry.model);
  return [...seen];
}

/**
 * The models a merge method receives, in mergekit's order: the recipe's `models`, then the base model
 * when it is not listed there. A model's position here is its model index.
 */
export function mergeInputModels(recipe: MergeRecipe): string[] {
  const inputs = recipe.models.map((entry) => entry.model);
  if (recipe.baseModel !== undefined && !inputs.includes(recipe.baseModel)) inputs.push(recipe.baseModel);
  return inputs;
}
