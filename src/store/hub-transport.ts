/**
 * The one fetch every hub call of the page goes through (downloads, repo creation, uploads), so the
 * access token reaches only the hub the user chose: a request to any other origin (the hub's CDN or
 * LFS storage it redirects to, a presigned upload URL) goes without an Authorization header.
 * Aborts follow `signal`.
 */
export function hubFetchFor(hubUrl: string, signal?: AbortSignal): typeof fetch {
  const hubOrigin = new URL(hubUrl).origin;
  return (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input), hubOrigin);
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    if (url.origin !== hubOrigin) headers.delete('Authorization');
    return fetch(input, { ...init, headers, signal: signal ?? init?.signal });
  };
}
