/**
 * Where the CLI finds the hub and its cache, read as Python's huggingface_hub reads them, so both
 * share one cache and one login:
 * - the cache: `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, with
 *   `HF_HOME` defaulting to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
 * - the hub: `--hub-endpoint URL`, else `HF_ENDPOINT`, else https://huggingface.co;
 * - the token: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file `HF_TOKEN_PATH`,
 *   else `$HF_HOME/token` (what `hf auth login` writes); surrounding whitespace is dropped;
 * - offline: `--offline`, or `HF_HUB_OFFLINE` set to 1, ON, YES or TRUE (any case).
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_HUB_URL, parseHubUrl } from '../store/hub-fetch';

export interface HubSettings {
  /** The hub's address, without a trailing slash. */
  endpoint: string;
  /** The hub cache folder (holds `models--org--name` folders). */
  cacheDir: string;
  accessToken?: string;
  /** Only the cache is used; nothing is requested from the hub. */
  offline: boolean;
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}

/** huggingface_hub's truthy environment values. */
function isTrue(value: string | undefined): boolean {
  return value !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(value.trim().toUpperCase());
}

function nonEmpty(value: string | undefined): string | undefined {
  return value !== undefined && value.trim() !== '' ? value : undefined;
}

export function hfHome(env: NodeJS.ProcessEnv = process.env): string {
  const home = nonEmpty(env.HF_HOME);
  if (home) return expandHome(home);
  return join(expandHome(nonEmpty(env.XDG_CACHE_HOME) ?? '~/.cache'), 'huggingface');
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const cache = nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE);
  return cache ? expandHome(cache) : join(hfHome(env), 'hub');
}

/** The token huggingface_hub would send, or undefined when none is set. */
export async function hubToken(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const fromEnv = nonEmpty(env.HF_TOKEN) ?? nonEmpty(env.HUGGING_FACE_HUB_TOKEN);
  if (fromEnv) return fromEnv.trim();
  const file = expandHome(nonEmpty(env.HF_TOKEN_PATH) ?? join(hfHome(env), 'token'));
  try {
    return nonEmpty(await readFile(file, 'utf8'))?.trim();
  } catch {
    // no token file: anonymous access, as huggingface_hub does
    return undefined;
  }
}

/** The settings for a run; flags win over the environment. Throws HubAccessError for a bad URL. */
export async function hubSettings(
  flags: { endpoint?: string; offline?: boolean } = {},
  env: NodeJS.ProcessEnv = process.env,
): Promise<HubSettings> {
  const endpoint = (flags.endpoint ?? nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_HUB_URL).replace(/\/+$/, '');
  parseHubUrl(endpoint);
  return {
    endpoint,
    cacheDir: hubCacheDir(env),
    accessToken: await hubToken(env),
    offline: Boolean(flags.offline) || isTrue(env.HF_HUB_OFFLINE),
  };
}
