/**
 * The key-value store under the model library: one IndexedDB object store (through idb-keyval), so
 * a chunk and the progress record that counts it are written in one transaction.
 */
import { createStore, getMany, keys, promisifyRequest, type UseStore } from 'idb-keyval';

export interface KeyValueStore {
  getMany<T>(keys: readonly string[]): Promise<(T | undefined)[]>;
  keys(): Promise<string[]>;
  /** Puts and deletes in one transaction: all of them happen or none do. */
  write(puts: readonly (readonly [string, unknown])[], deletes?: readonly string[]): Promise<void>;
}

export const LIBRARY_DB_NAME = 'l2s-library';
const LIBRARY_STORE_NAME = 'kv';

export function idbKeyValueStore(dbName = LIBRARY_DB_NAME): KeyValueStore {
  const store: UseStore = createStore(dbName, LIBRARY_STORE_NAME);
  return {
    getMany: <T>(ks: readonly string[]) => getMany<T>([...ks], store),
    keys: () => keys<string>(store),
    write: (puts, deletes = []) =>
      store('readwrite', (s) => {
        for (const [key, value] of puts) s.put(value, key);
        for (const key of deletes) s.delete(key);
        return promisifyRequest(s.transaction);
      }),
  };
}
