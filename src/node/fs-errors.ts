/** File-system errors in words a user can act on, with the code kept for searching. */

const WORDS: Record<string, string> = {
  ENOSPC: 'no space left on the disk',
  EDQUOT: 'over the disk quota',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the file system is read-only',
  ENOENT: 'no such file or folder',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'it is a folder',
  EEXIST: 'it already exists',
  EXDEV: 'it is on another file system',
  ENOTEMPTY: 'the folder is not empty',
  EBUSY: 'it is busy',
  EIO: 'an input/output error from the disk',
  EMFILE: 'too many open files',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'the name is too long',
};

/** `no space left on the disk (ENOSPC)`; other errors by their message. */
export function fsErrorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code && WORDS[code]) return `${WORDS[code]} (${code})`;
  if (code) return `${code}: ${(e as Error).message}`;
  return (e as Error)?.message ?? String(e);
}
