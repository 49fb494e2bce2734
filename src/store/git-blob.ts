/**
 * git's object id of a file ("blob"): sha1 of `blob <size in decimal>\0` followed by the content.
 * The hub gives it as `oid` for files kept in git itself (configs, indexes, tokenizer files),
 * where LFS files get their sha256.
 */

export async function gitBlobSha1(content: Blob): Promise<string> {
  const header = new TextEncoder().encode(`blob ${content.size}\0`);
  const bytes = await new Blob([header, content]).arrayBuffer();
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-1', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}
