/**
 * After a reload the browser must be asked again before a linked folder may be read, and only a
 * click may ask. Every button that reads models (Merge, Inspect, Compare's runs) asks here for the
 * linked models it is about to read, before its worker opens them; the workers only query.
 */
import type { ModelRecord } from '../store/library';
import { folderPermission, requestFolderPermission } from '../store/linked-folder';

export interface LinkedReadPermission {
  /** The browser was asked (the library should show the new permission). */
  asked: boolean;
  /** Why reading cannot go ahead (a linked folder the browser did not allow); undefined when it can. */
  refusal?: string;
}

/**
 * Asks for read permission on each linked model of `models` named in `names`; `action` completes
 * "so <model> cannot be …" (merged, inspected, run) in the refusal.
 */
export async function askToReadLinkedModels(
  models: readonly ModelRecord[],
  names: Iterable<string>,
  action: string,
): Promise<LinkedReadPermission> {
  const wanted = new Set(names);
  let asked = false;
  for (const m of models) {
    if (!m.link || !wanted.has(m.name)) continue;
    try {
      if ((await folderPermission(m.link.handle)) === 'granted') continue;
      asked = true;
      if (await requestFolderPermission(m.link.handle, 'read')) continue;
    } catch {
      // reported below
    }
    return {
      asked,
      refusal:
        `The browser did not allow reading the linked folder ${m.link.handle.name}, so ${m.name} cannot be ${action}. ` +
        'Press "Allow reading" beside it in the library.',
    };
  }
  return { asked };
}

/** Lets the library panel show a permission the browser was just asked for. */
export function announceLibraryChanged(from: HTMLElement): void {
  from.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
}
