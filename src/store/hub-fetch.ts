/**
 * The one `fetch` every hub request goes through, so the user's access token reaches only the hub
 * the user chose.
 *
 * The hub answers file requests with redirects to other origins (its CDN, S3, the Xet bridge), and
 * `@huggingface/hub` even hands back a CDN URL as the download URL when the CDN answers
 * `X-Cache: ... cloudfront`. A caller that then adds `Authorization` would send the token there. So:
 * - requests to the hub's origin get `Authorization: Bearer <token>` (callers need not add it);
 * - requests to any other origin lose an `Authorization` header that carries the user's token,
 *   whoever added it. Other credentials pass: the hub hands out short-lived tokens scoped to one
 *   service (Xet's CAS gets a JWT the hub issued for it), and those are meant for that origin;
 * - redirects are followed hop by hop where the platform lets code read them (Node): a hop to
 *   another origin drops `Authorization` (as the Fetch standard does), then the rules above apply.
 *   Browsers hide redirect targets from code (`redirect: 'manual'` gives an opaque response), but
 *   the Fetch standard has them drop `Authorization` on a redirect to another origin, so there the
 *   browser follows them.
 * A token is never sent over plain HTTP except to this machine (localhost, 127.0.0.0/8, ::1).
 */

export const DEFAULT_HUB_URL = 'https://huggingface.co';

/** The same bound as the Fetch standard's redirect limit. */
const MAX_REDIRECTS = 20;

/** The hub address or the token cannot be used as asked; nothing was sent. */
export class HubAccessError extends Error {
  override name = 'HubAccessError';
}

export interface HubFetchOptions {
  /** The hub the user chose; only its origin (scheme, host, port) receives the token. */
  hubUrl: string;
  accessToken?: string;
  /** Aborts every request made through this fetch. */
  signal?: AbortSignal;
  /** The underlying fetch (tests pass a recording one); the global fetch by default. */
  fetch?: typeof fetch;
  /**
   * Follow redirects in code, hop by hop. Defaults to true where redirect responses are readable
   * (Node), false in browsers, which follow them themselves and drop the token across origins.
   */
  followRedirectsManually?: boolean;
}

export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return (
    host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host)
  );
}

/** The hub URL parsed, or a HubAccessError saying why it is not a hub address. */
export function parseHubUrl(hubUrl: string): URL {
  let url: URL;
  try {
    url = new URL(hubUrl);
  } catch {
    throw new HubAccessError(`the hub address '${hubUrl}' is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new HubAccessError(`the hub address '${hubUrl}' is not an http(s) URL`);
  }
  if (url.username || url.password) {
    throw new HubAccessError(`the hub address '${url.origin}' must not carry a user name or password`);
  }
  return url;
}

/** Whether the token may go to this hub at all: https, or plain HTTP to this machine only. */
export function tokenRefusal(hubUrl: string): string | undefined {
  let url: URL;
  try {
    url = parseHubUrl(hubUrl);
  } catch (e) {
    return (e as Error).message;
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    return (
      `the hub ${url.origin} is plain HTTP, so anyone on the network could read the access token; ` +
      'the token is sent only over https (or to localhost)'
    );
  }
  return undefined;
}

/**
 * What the page should tell the user before a token is typed, or undefined for the default hub:
 * every other hub address is shown, and a plain-HTTP one is called out.
 */
export function hubUrlWarning(hubUrl: string): string | undefined {
  let url: URL;
  try {
    url = parseHubUrl(hubUrl);
  } catch (e) {
    return `Downloads will fail: ${(e as Error).message}.`;
  }
  if (url.origin === DEFAULT_HUB_URL) return undefined;
  const refusal = tokenRefusal(hubUrl);
  if (refusal) {
    return (
      `This page downloads models from ${url.origin}, not from ${DEFAULT_HUB_URL}, over plain HTTP: ` +
      'anyone on the network can read or change what it sends. Your access token will not be sent to it.'
    );
  }
  return (
    `This page downloads models from ${url.origin}, not from ${DEFAULT_HUB_URL}. ` +
    `An access token you enter here is sent to ${url.origin}: enter one only if you trust that server.`
  );
}

function redirectsReadable(): boolean {
  // Browsers (windows and workers) return opaque redirect responses; Node's fetch returns the 3xx.
  const g = globalThis as { process?: { versions?: { node?: string } }; document?: unknown };
  return typeof g.process?.versions?.node === 'string' && g.document === undefined;
}

function requestUrl(input: string | URL | Request): string {
  if (typeof input === 'string') return input;
  if (input instanceof URL) return input.href;
  return input.url;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

function combinedSignal(a?: AbortSignal | null, b?: AbortSignal): AbortSignal | undefined {
  if (a && b) return AbortSignal.any([a, b]);
  return a ?? b;
}

/**
 * A fetch that attaches the token to requests for `hubUrl`'s origin and strips it from all others,
 * redirects included. Throws HubAccessError at once for a token the hub may not have (plain HTTP).
 * Request bodies are taken from `init.body` (a redirect that keeps the method sends it again).
 */
export function createHubFetch(options: HubFetchOptions): typeof fetch {
  const hub = parseHubUrl(options.hubUrl);
  const token = options.accessToken || undefined;
  if (token) {
    const refusal = tokenRefusal(options.hubUrl);
    if (refusal) throw new HubAccessError(refusal);
  }
  const baseFetch = options.fetch ?? ((input, init) => fetch(input, init));
  const manual = options.followRedirectsManually ?? redirectsReadable();

  const headersFor = (url: string, base: Headers): Headers => {
    const headers = new Headers(base);
    if (new URL(url).origin === hub.origin) {
      if (token) headers.set('Authorization', `Bearer ${token}`);
    } else if (token && headers.get('Authorization')?.includes(token)) {
      headers.delete('Authorization');
    }
    return headers;
  };

  return async (input, init) => {
    const signal = combinedSignal(
      init?.signal ?? (input instanceof Request ? input.signal : undefined),
      options.signal,
    );
    const baseHeaders = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    let url = new URL(requestUrl(input), hub).href;
    let method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    let body = init?.body;
    const callerRedirect = init?.redirect ?? 'follow';
    if (!manual || callerRedirect !== 'follow') {
      const first =
        input instanceof Request ? new Request(input, { headers: headersFor(url, baseHeaders) }) : url;
      return baseFetch(first, { ...init, headers: headersFor(url, baseHeaders), signal });
    }
    for (let hop = 0; ; hop++) {
      const response = await baseFetch(url, {
        ...init,
        method,
        body,
        headers: headersFor(url, baseHeaders),
        redirect: 'manual',
        signal,
      });
      const location = response.headers.get('Location');
      if (!isRedirect(response.status) || location === null) return response;
      if (hop >= MAX_REDIRECTS) {
        throw new HubAccessError(`${requestUrl(input)}: more than ${MAX_REDIRECTS} redirects`);
      }
      await response.body?.cancel().catch(() => undefined);
      const next = new URL(location, url);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') {
        throw new HubAccessError(`${requestUrl(input)}: the hub redirected to a non-http(s) address`);
      }
      // Credentials given for one origin are not for the next (the Fetch standard's rule).
      if (next.origin !== new URL(url).origin) baseHeaders.delete('Authorization');
      // As the Fetch standard: 303 turns into GET, and so do 301/302 after a POST.
      if (
        response.status === 303 ||
        ((response.status === 301 || response.status === 302) && method === 'POST')
      ) {
        if (method !== 'HEAD') method = 'GET';
        body = undefined;
        baseHeaders.delete('Content-Type');
        baseHeaders.delete('Content-Length');
      }
      url = next.href;
    }
  };
}
