import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createHubFetch,
  DEFAULT_HUB_URL,
  HubAccessError,
  hubUrlWarning,
  isLoopbackHost,
  tokenRefusal,
} from '../../src/store/hub-fetch';

interface Seen {
  url: string;
  method: string;
  authorization: string | null;
  redirect?: RequestRedirect;
}

/** A fetch answering from a table of URL -> response, recording what each request carried. */
function scriptedFetch(routes: Record<string, () => Response>): { fetch: typeof fetch; seen: Seen[] } {
  const seen: Seen[] = [];
  const fn: typeof fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    seen.push({
      url,
      method: init?.method ?? 'GET',
      authorization: headers.get('Authorization'),
      redirect: init?.redirect,
    });
    const route = routes[url];
    if (!route) return new Response('no route', { status: 404 });
    return route();
  };
  return { fetch: fn, seen };
}

function redirect(location: string, status = 302): () => Response {
  return () => new Response(null, { status, headers: { Location: location } });
}

const HUB = 'https://hub.example';
const CDN = 'https://cdn.example';

describe('createHubFetch', () => {
  it('adds the token for the hub origin and removes it for any other, whoever added it', async () => {
    const { fetch, seen } = scriptedFetch({
      [`${HUB}/api/models/a/b/tree/main`]: () => new Response('[]'),
      [`${CDN}/blob`]: () => new Response('bytes'),
    });
    const hubFetch = createHubFetch({ hubUrl: HUB, accessToken: 'hf_secret', fetch });
    await hubFetch(`${HUB}/api/models/a/b/tree/main`);
    // @huggingface/hub hands back a CDN URL when the CDN says `X-Cache: ... cloudfront`; a caller
    // that adds the token itself must not get it through.
    await hubFetch(`${CDN}/blob`, { headers: { Authorization: 'Bearer hf_secret', Range: 'bytes=0-' } });
    expect(seen.map((s) => [s.url, s.authorization])).toEqual([
      [`${HUB}/api/models/a/b/tree/main`, 'Bearer hf_secret'],
      [`${CDN}/blob`, null],
    ]);
  });

  it("lets other origins' own credentials through (Xet's CAS gets a JWT the hub issued for it)", async () => {
    const { fetch, seen } = scriptedFetch({});
    const hubFetch = createHubFetch({ hubUrl: HUB, accessToken: 'hf_secret', fetch });
    await hubFetch('https://cas.example/reconstruction/abc', {
      headers: { Authorization: 'Bearer xet-jwt' },
    });
    await hubFetch('https://cas.example/x', { headers: { Authorization: 'token hf_secret' } });
    expect(seen.map((s) => s.authorization)).toEqual(['Bearer xet-jwt', null]);
  });

  it('treats another port or scheme of the same host as another origin', async () => {
    const { fetch, seen } = scriptedFetch({});
    const hubFetch = createHubFetch({ hubUrl: 'http://127.0.0.1:8000', accessToken: 't', fetch });
    await hubFetch('http://127.0.0.1:8000/x');
    await hubFetch('http://127.0.0.1:8001/x');
    await hubFetch('http://localhost:8000/x');
    expect(seen.map((s) => s.authorization)).toEqual(['Bearer t', null, null]);
  });

  it('follows redirects hop by hop, with the token only on hops to the hub', async () => {
    const { fetch, seen } = scriptedFetch({
      [`${HUB}/a/b/resolve/main/model.safetensors`]: redirect(
        `${HUB}/a/b/resolve/abc123/model.safetensors`,
        307,
      ),
      [`${HUB}/a/b/resolve/abc123/model.safetensors`]: redirect(`${CDN}/lfs/sha?sig=1`),
      [`${CDN}/lfs/sha?sig=1`]: redirect('/back-home'),
      [`${CDN}/back-home`]: () => new Response('ok'),
      [`${CDN}/signed`]: redirect('https://s3.example/object'),
      'https://s3.example/object': () => new Response('object'),
    });
    const hubFetch = createHubFetch({
      hubUrl: HUB,
      accessToken: 'hf_secret',
      fetch,
      followRedirectsManually: true,
    });
    const response = await hubFetch(`${HUB}/a/b/resolve/main/model.safetensors`);
    expect(await response.text()).toBe('ok');
    expect(seen.map((s) => [s.url, s.authorization, s.redirect])).toEqual([
      [`${HUB}/a/b/resolve/main/model.safetensors`, 'Bearer hf_secret', 'manual'],
      [`${HUB}/a/b/resolve/abc123/model.safetensors`, 'Bearer hf_secret', 'manual'],
      [`${CDN}/lfs/sha?sig=1`, null, 'manual'],
      [`${CDN}/back-home`, null, 'manual'],
    ]);
    // A credential meant for one origin is dropped when a redirect leaves it.
    await hubFetch(`${CDN}/signed`, { headers: { Authorization: 'Bearer cdn-only' } });
    expect(seen.slice(-2).map((s) => [s.url, s.authorization])).toEqual([
      [`${CDN}/signed`, 'Bearer cdn-only'],
      ['https://s3.example/object', null],
    ]);
  });

  it('turns a POST into a GET on 303 and stops after 20 redirects', async () => {
    const { fetch, seen } = scriptedFetch({
      [`${HUB}/api/commit`]: redirect(`${HUB}/done`, 303),
      [`${HUB}/done`]: () => new Response('done'),
      [`${HUB}/loop`]: redirect(`${HUB}/loop`),
    });
    const hubFetch = createHubFetch({ hubUrl: HUB, fetch, followRedirectsManually: true });
    await hubFetch(`${HUB}/api/commit`, { method: 'POST', body: '{}' });
    expect(seen.map((s) => s.method)).toEqual(['POST', 'GET']);
    await expect(hubFetch(`${HUB}/loop`)).rejects.toThrow(/more than 20 redirects/);
  });

  it('leaves redirects to the platform where it cannot read them (browsers)', async () => {
    const { fetch, seen } = scriptedFetch({ [`${HUB}/x`]: () => new Response('ok') });
    const hubFetch = createHubFetch({ hubUrl: HUB, accessToken: 't', fetch, followRedirectsManually: false });
    await hubFetch(`${HUB}/x`);
    expect(seen).toEqual([
      { url: `${HUB}/x`, method: 'GET', authorization: 'Bearer t', redirect: undefined },
    ]);
  });

  it('refuses to send a token over plain HTTP except to this machine', () => {
    expect(() => createHubFetch({ hubUrl: 'http://mirror.example', accessToken: 't' })).toThrow(
      HubAccessError,
    );
    expect(() => createHubFetch({ hubUrl: 'http://mirror.example', accessToken: 't' })).toThrow(
      'the hub http://mirror.example is plain HTTP, so anyone on the network could read the access token; the token is sent only over https (or to localhost)',
    );
    expect(() => createHubFetch({ hubUrl: 'http://mirror.example' })).not.toThrow();
    expect(() => createHubFetch({ hubUrl: 'http://localhost:5000', accessToken: 't' })).not.toThrow();
    expect(() => createHubFetch({ hubUrl: 'http://127.0.0.1:5000', accessToken: 't' })).not.toThrow();
    expect(() => createHubFetch({ hubUrl: 'ftp://hub.example' })).toThrow(/not an http\(s\) URL/);
    expect(() => createHubFetch({ hubUrl: 'https://user:pw@hub.example' })).toThrow(/user name or password/);
  });
});

describe('hub address checks', () => {
  it('knows loopback hosts', () => {
    for (const h of ['localhost', 'LOCALHOST', 'a.localhost', '127.0.0.1', '127.1.2.3', '[::1]']) {
      expect(isLoopbackHost(h), h).toBe(true);
    }
    for (const h of ['localhost.example.com', '128.0.0.1', '10.0.0.1', 'hub.example', '127.0.0.1.nip.io']) {
      expect(isLoopbackHost(h), h).toBe(false);
    }
  });

  it('warns for every hub but the default one, and most loudly for plain HTTP', () => {
    expect(hubUrlWarning(DEFAULT_HUB_URL)).toBeUndefined();
    expect(hubUrlWarning('https://huggingface.co/')).toBeUndefined();
    expect(hubUrlWarning('https://mirror.example')).toBe(
      'This page downloads models from https://mirror.example, not from https://huggingface.co. An access token you enter here is sent to https://mirror.example: enter one only if you trust that server.',
    );
    expect(hubUrlWarning('http://127.0.0.1:9000')).toContain('sent to http://127.0.0.1:9000');
    expect(hubUrlWarning('http://mirror.example')).toBe(
      'This page downloads models from http://mirror.example, not from https://huggingface.co, over plain HTTP: anyone on the network can read or change what it sends. Your access token will not be sent to it.',
    );
    expect(hubUrlWarning('javascript:alert(1)')).toBe(
      "Downloads will fail: the hub address 'javascript:alert(1)' is not an http(s) URL.",
    );
    expect(tokenRefusal('https://mirror.example')).toBeUndefined();
  });
});

describe('createHubFetch over real HTTP (Node follows the redirects hop by hop)', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  });

  async function listen(handler: (req: IncomingMessage, res: import('node:http').ServerResponse) => void) {
    const server = createServer(handler);
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it('never lets the redirect target on another origin see the token', async () => {
    const cdnLog: (string | undefined)[] = [];
    const cdn = await listen((req, res) => {
      cdnLog.push(req.headers.authorization);
      res.writeHead(200, { 'X-Cache': 'Hit from cloudfront' });
      res.end('weights');
    });
    const hubLog: (string | undefined)[] = [];
    const hub = await listen((req, res) => {
      hubLog.push(req.headers.authorization);
      res.writeHead(302, { Location: `${cdn}/lfs/abc` });
      res.end();
    });
    const hubFetch = createHubFetch({ hubUrl: hub, accessToken: 'hf_secret' });
    const response = await hubFetch(`${hub}/a/b/resolve/main/model.safetensors`);
    expect(await response.text()).toBe('weights');
    expect(response.url).toBe(`${cdn}/lfs/abc`);
    await (await hubFetch(response.url, { headers: { Authorization: 'Bearer hf_secret' } })).text();
    expect(hubLog).toEqual(['Bearer hf_secret']);
    expect(cdnLog).toEqual([undefined, undefined]);
  });
});
