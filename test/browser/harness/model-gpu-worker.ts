/// <reference lib="webworker" />
/**
 * Worker side of model-gpu.html: the model kernel cases and the GPU runner cases on navigator.gpu,
 * with the fixture models fetched from the dev server into Blobs (the app's library keeps models
 * as Blobs too).
 */
import type { ModelFiles } from '../../../src/engine/io';
import { blobByteSource } from '../../../src/formats/byte-source';
import { serveCases } from './case-runner';
import {
  type FixtureReference,
  MODEL_KERNEL_CASES,
  type ModelFixtures,
  modelRunnerCases,
} from './model-gpu-cases';

const FIXTURE_URL = '/test/fixtures/qwen2-tiny-l2s';
const FILES: Record<'system1' | 'system2', string[]> = {
  system1: [
    'config.json',
    'generation_config.json',
    'model.safetensors',
    'tokenizer.json',
    'tokenizer_config.json',
  ],
  system2: [
    'config.json',
    'generation_config.json',
    'model-00001-of-00002.safetensors',
    'model-00002-of-00002.safetensors',
    'model.safetensors.index.json',
    'tokenizer.json',
    'tokenizer_config.json',
  ],
};

/** Network failures are retried: the dev server restarts when a config file changes under it. */
async function fetchBlob(url: string, tries = 5): Promise<Blob> {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
      return await res.blob();
    } catch (e) {
      if (!(e instanceof TypeError) || attempt >= tries) throw e;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

/** Every fixture file, fetched once before the cases run (file name -> Blob, per model). */
const fetched = new Map<string, Map<string, Blob>>();

async function fetchFixtures(): Promise<void> {
  for (const model of ['system1', 'system2'] as const) {
    const blobs = new Map<string, Blob>();
    for (const f of [...FILES[model], 'reference.json'])
      blobs.set(f, await fetchBlob(`${FIXTURE_URL}/${model}/${f}`));
    fetched.set(model, blobs);
  }
}

const fixtures: ModelFixtures = {
  async open(model): Promise<ModelFiles> {
    const blobs = new Map(fetched.get(model));
    blobs.delete('reference.json');
    return {
      name: model,
      files: () => [...blobs.keys()],
      async open(file) {
        const b = blobs.get(file);
        if (!b) throw new Error(`${model}: no file ${file}`);
        return blobByteSource(b, `${model}/${file}`);
      },
    };
  },
  async reference(model) {
    return JSON.parse(await fetched.get(model)!.get('reference.json')!.text()) as FixtureReference;
  },
};

serveCases(() => [...MODEL_KERNEL_CASES, ...modelRunnerCases(fixtures)], fetchFixtures);
