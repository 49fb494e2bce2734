/**
 * Hub imports in Node against the local test hub: file names refused or URL-encoded, files kept in
 * git checked by their git blob sha1, and the token kept from a CDN on another origin.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { gitBlobSha1 } from '../../src/store/git-blob';
import { encodeHubPath, hubFileNameProblem, importFromHub } from '../../src/store/import-hub';
import { ModelLibrary } from '../../src/store/library';
import { HubServer } from '../browser/hub-server';
import { memoryStore } from '../fixtures/memory-store';

const REPO = 'test-org/tiny';
const servers: HubServer[] = [];

async function hub(extra: Record<string, Uint8Array> = {}, token?: string): Promise<HubServer> {
  const model = await makeTinyModel(TINY_TRIO[0]);
  const files = new Map(model.files);
  for (const [name, bytes] of Object.entries(extra)) files.set(name, bytes);
  const server = new HubServer();
  server.addRepo(REPO, { files, token });
  await server.start();
  servers.push(server);
  return server;
}

afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
});

describe('hub file names', () => {
  it('refuses separators, URL delimiters, dot segments and control characters', () => {
    expect(hubFileNameProblem('model-00001-of-00002.safetensors')).toBeUndefined();
    expect(hubFileNameProblem('tokenizer %41+[x].json')).toBeUndefined();
    expect(hubFileNameProblem('refs/pr/1')).toBeUndefined();
    expect(hubFileNameProblem('..\\..\\x.safetensors')).toBe("it contains '\\'");
    expect(hubFileNameProblem('model.safetensors?download=1')).toBe("it contains '?'");
    expect(hubFileNameProblem('a#.safetensors')).toBe("it contains '#'");
    expect(hubFileNameProblem('..')).toBe("it has a '.' or '..' segment");
    expect(hubFileNameProblem('a/../config.json')).toBe("it has a '.' or '..' segment");
    expect(hubFileNameProblem('./config.json')).toBe("it has a '.' or '..' segment");
    expect(hubFileNameProblem('a//b')).toBe('it has an empty segment');
    expect(hubFileNameProblem('')).toBe('it is empty');
    expect(hubFileNameProblem('tokenizer\n.json')).toBe('it contains the control character U+000A');
    expect(hubFileNameProblem('config\u0000.json')).toBe('it contains the control character U+0000');
    expect(hubFileNameProblem('config\u009b.json')).toBe('it contains the control character U+009B');
    expect(hubFileNameProblem('config\u007f.json')).toBe('it contains the control character U+007F');
  });

  it('encodes every path segment', () => {
    expect(encodeHubPath('tokenizer %41+[x].json')).toBe('tokenizer%20%2541%2B%5Bx%5D.json');
    expect(encodeHubPath('sub dir/a&b.json')).toBe('sub%20dir/a%26b.json');
  });

  it('an import listing a hostile name fails naming it, before anything is stored', async () => {
    for (const name of ['..\\model.safetensors', 'a#.safetensors', 'tokenizer?.json', 'config\u0007.json']) {
      const server = await hub({ [name]: new Uint8Array([1, 2, 3]) });
      const kv = memoryStore();
      const error = await importFromHub(new ModelLibrary(kv, 4096), REPO, 'main', {
        hubUrl: server.url,
      }).catch((e: Error) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).name).toBe('HubFileNameError');
      expect((error as Error).message).toContain(
        `the hub lists a file named ${JSON.stringify(name)}, which is refused`,
      );
      expect(kv.data.size).toBe(0);
      expect(server.requests).toEqual([]);
    }
  });

  it('a name with % and spaces is requested encoded and stored as listed', async () => {
    const odd = new TextEncoder().encode('{"odd": true}\n');
    const server = await hub({ 'tokenizer %41.json': odd });
    const kv = memoryStore();
    const library = new ModelLibrary(kv, 4096);
    const record = await importFromHub(library, REPO, 'main', { hubUrl: server.url });
    expect(record.files.map((f) => f.name)).toContain('tokenizer %41.json');
    const source = await (await library.openModel({ id: record.id })).open('tokenizer %41.json');
    expect(new TextDecoder().decode(await source.read(0, source.size))).toBe('{"odd": true}\n');
    expect(server.log.some((r) => r.url.endsWith('/resolve/main/tokenizer%20%2541.json'))).toBe(true);
  });
});

describe('git blob sha1 of files kept in git', () => {
  it('equals git hash-object', async () => {
    // `printf 'hello\n' | git hash-object --stdin` and the empty blob.
    expect(await gitBlobSha1(new Blob(['hello\n']))).toBe('ce013625030ba8dba906f756967f9e9ca394464a');
    expect(await gitBlobSha1(new Blob([]))).toBe('e69de29bb2d1d6434b8b29ae775ad8c2e48c5391');
    const bytes = new Uint8Array(10_000).map((_, i) => (i * 7) & 0xff);
    const expected = createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
    expect(await gitBlobSha1(new Blob([bytes]))).toBe(expected);
  });

  it('a corrupted tokenizer.json is refused by its git sha1 and deleted', async () => {
    const server = await hub();
    server.corruptFile(REPO, 'tokenizer.json');
    const kv = memoryStore();
    const error = (await importFromHub(new ModelLibrary(kv, 4096), REPO, 'main', {
      hubUrl: server.url,
    }).catch((e: Error) => e)) as Error;
    expect(error.name).toBe('ChecksumMismatchError');
    expect(error.message).toMatch(
      new RegExp(
        `^${REPO}/tokenizer\\.json: git blob sha1 is [0-9a-f]{40} but the hub lists [0-9a-f]{40}; the file is corrupt and was deleted\\.`,
      ),
    );
    expect([...kv.data.keys()].filter((k) => k.includes('/tokenizer.json/'))).toEqual([]);
  });

  it('an intact import checks every git file and stores its bytes', async () => {
    const server = await hub();
    const kv = memoryStore();
    const record = await importFromHub(new ModelLibrary(kv, 4096), REPO, 'main', { hubUrl: server.url });
    expect(record.files.map((f) => f.name).sort()).toContain('tokenizer.json');
  });
});

describe('the access token and a CDN on another origin', () => {
  it('the CDN never sees the token, though it answers X-Cache: cloudfront', async () => {
    const model = await makeTinyModel(TINY_TRIO[0]);
    const cdn = new HubServer({ xCache: 'Hit from cloudfront' });
    cdn.addRepo(REPO, { files: model.files });
    await cdn.start();
    servers.push(cdn);
    const origin = new HubServer({ lfsBaseUrl: cdn.url });
    origin.addRepo(REPO, { files: model.files, token: 'hf_secret' });
    await origin.start();
    servers.push(origin);
    const record = await importFromHub(new ModelLibrary(memoryStore(), 4096), REPO, 'main', {
      hubUrl: origin.url,
      accessToken: 'hf_secret',
    });
    expect(record.files.some((f) => f.name.endsWith('.safetensors'))).toBe(true);
    expect(cdn.log.length).toBeGreaterThan(0);
    expect(cdn.log.filter((r) => r.authorization !== null)).toEqual([]);
    expect(origin.log.every((r) => r.authorization === 'Bearer hf_secret')).toBe(true);
  });
});
