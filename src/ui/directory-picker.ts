/**
 * Picking a folder on the user's computer (File System Access API, Chromium-based browsers).
 *
 * For the browser tests only, `?opfsPicker` in the page's address replaces the picker: Playwright
 * cannot answer a native picker, so the page asks (window.prompt) for a path in the origin private
 * file system, where the test wrote its files, and hands that directory on as if it had been
 * picked. Everything after the pick is the code a user runs.
 */

interface DirectoryPickerWindow {
  showDirectoryPicker(options?: {
    id?: string;
    mode?: 'read' | 'readwrite';
  }): Promise<FileSystemDirectoryHandle>;
}

function opfsPickerHook(): boolean {
  return new URLSearchParams(location.search).has('opfsPicker');
}

/** Whether this browser can link folders and write output into one. */
export function canPickDirectory(): boolean {
  return (
    opfsPickerHook() || typeof (window as Partial<DirectoryPickerWindow>).showDirectoryPicker === 'function'
  );
}

async function opfsDirectory(path: string): Promise<FileSystemDirectoryHandle> {
  let dir = await navigator.storage.getDirectory();
  for (const part of path.split('/').filter(Boolean)) dir = await dir.getDirectoryHandle(part);
  return dir;
}

/**
 * A folder the user picks; undefined when the picker was closed. `id` lets the browser open the
 * picker where the last pick of the same purpose was.
 */
export async function pickDirectory(
  id: 'link-model' | 'merge-output',
  mode: 'read' | 'readwrite',
): Promise<FileSystemDirectoryHandle | undefined> {
  if (opfsPickerHook()) {
    const path = window.prompt(`Test folder picker (${id}): a folder path in the origin private file system`);
    return path === null ? undefined : opfsDirectory(path);
  }
  try {
    return await (window as unknown as DirectoryPickerWindow).showDirectoryPicker({ id, mode });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') return undefined;
    throw e;
  }
}
