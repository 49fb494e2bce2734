/**
 * A hub repo read in place (src/store/hub-model.ts) against the local test hub over real HTTP: the
 * revision pinned to its commit, the file list, headers and tensors by Range reads, the token sent
 * to the hub only, errors naming repo and file.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { readModelTensorBytes, readModelTensors } from '../../src/formats/model-index';
import { openHubModel, pinHubRevision } from '../../src/store/hub-model';
import { HubServer } from '../browser/hub-server';

const REPO = 'test-org/tiny-qwen-system2';
let hub: HubServer | undefined;

afterEach(async () => {
  await hub?.stop();
  hub = undefined;
});

async function serve(token?: string) {
  const model = await makeTinyModel(TINY_TRIO[2]);
  hub = new HubServer();
  hub.addRepo(REPO, { files: new Map(model.files), token });
  await hub.start();
  return { hub, model };
}

describe('hub model streaming', () => {
  it('pins main to its commit and reads tensors by Range requests at that commit', async () => {
    const { hub, model } = await serve();
    const commit = await pinHubRevision(REPO, 'main', { hubUrl: hub.url });
    expect(commit).toBe(hub.revisions(REPO).get('main')!.sha);
    const files = await openHubModel(REPO, commit, { hubUrl: hub.url });
    expect([...files.files()].sort()).toEqual([...model.files.keys()].sort());
    const index = await readModelTensors(files);
    const name = 'model.layers.1.mlp.up_proj.weight';
    const info = index.tensors.get(name)!;
    const expected = model.files.get(info.file)!.subarray(info.offset, info.offset + info.byteLength);
    expect(Buffer.from(await readModelTensorBytes(index, name)).equals(Buffer.from(expected))).toBe(true);
    const weightUrls = hub.log.filter((r) => r.url.includes('/resolve/')).map((r) => r.url);
    expect(weightUrls.length).toBeGreaterThan(0);
    for (const url of weightUrls) expect(url).toContain(`/resolve/${commit}/`);
    for (const r of hub.requests) expect(r.range).toMatch(/^bytes=\d+-\d+$/);
  });

  it('sends the token to the hub, and says what to do without one', async () => {
    const { hub } = await serve('hf_secret');
    await expect(pinHubRevision(REPO, 'main', { hubUrl: hub.url })).rejects.toThrow(
      `${REPO}@main: access denied (HTTP 401); the repo is gated or private: accept its terms on the hub and enter an access token`,
    );
    const commit = await pinHubRevision(REPO, 'main', { hubUrl: hub.url, accessToken: 'hf_secret' });
    const files = await openHubModel(REPO, commit, { hubUrl: hub.url, accessToken: 'hf_secret' });
    expect((await readModelTensors(files)).tensors.size).toBeGreaterThan(0);
  });

  it('names the repo when a revision or file does not exist', async () => {
    const { hub } = await serve();
    await expect(pinHubRevision(REPO, 'no-such-branch', { hubUrl: hub.url })).rejects.toThrow(
      `${REPO}@no-such-branch: not found on the hub (HTTP 404); check the repo id and revision`,
    );
    const commit = await pinHubRevision(REPO, 'main', { hubUrl: hub.url });
    const files = await openHubModel(REPO, commit, { hubUrl: hub.url });
    await expect(files.open('missing.json')).rejects.toThrow(
      `${REPO}@${commit.slice(0, 12)}: no file missing.json`,
    );
  });

  it('reads at the pinned commit only: once that commit is gone, reads fail instead of returning newer bytes', async () => {
    const { hub, model } = await serve();
    const commit = await pinHubRevision(REPO, 'main', { hubUrl: hub.url });
    const files = await openHubModel(REPO, commit, { hubUrl: hub.url, retryDelayMs: 1 });
    // The branch moves on: the old commit is gone from this test hub, so reads must fail, not return new bytes.
    const changed = new Map(model.files);
    changed.set('config.json', new TextEncoder().encode('{"changed": true}'));
    hub.addRepo(REPO, { files: changed });
    const config = await files.open('config.json');
    await expect(config.read(0, config.size)).rejects.toThrow(
      `${REPO}/config.json: not found on the hub (HTTP 404)`,
    );
  });
});
