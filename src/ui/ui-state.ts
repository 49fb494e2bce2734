/**
 * What the page remembers across reloads (the recipe text, the merge settings), in an IndexedDB
 * database of its own: the library's clean-up removes keys it does not know from its database.
 */
import { createStore, get, set } from 'idb-keyval';

export const UI_STATE_DB_NAME = 'l2s-ui';
const store = () => createStore(UI_STATE_DB_NAME, 'state');
let opened: ReturnType<typeof createStore> | undefined;

/** The value saved under `key`, or undefined (also when storage cannot be read: private mode). */
export async function loadUiState<T>(key: string): Promise<T | undefined> {
  opened ??= store();
  try {
    return await get<T>(key, opened);
  } catch {
    return undefined;
  }
}

/** Saves `value` under `key`; a failure (storage full, private mode) only loses the memory of it. */
export async function saveUiState(key: string, value: unknown): Promise<void> {
  opened ??= store();
  try {
    await set(key, value, opened);
  } catch {
    // nothing to do: the page works without it
  }
}
