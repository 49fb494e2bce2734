/** The hub flags every subcommand that takes model references shares: --hub-endpoint and --offline. */

import { type HubSettings, hubSettings } from '../node/hub-settings';
import { HubAccessError } from '../store/hub-fetch';
import { UsageError } from './errors';

export const HUB_OPTIONS = {
  'hub-endpoint': { type: 'string' },
  offline: { type: 'boolean' },
} as const;

export const HUB_USAGE = `  --hub-endpoint URL     the hub that hub ids are downloaded from (default $HF_ENDPOINT, else
                         https://huggingface.co); HF_TOKEN (or $HF_HOME/token) is sent to it only
  --offline              use only the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
                         ~/.cache/huggingface/hub); also HF_HUB_OFFLINE=1
`;

/** The hub settings from the flags and the environment (flags win); a bad URL is a UsageError. */
export async function cliHubSettings(
  values: Record<string, string | boolean | undefined>,
): Promise<HubSettings> {
  try {
    return await hubSettings({
      endpoint: values['hub-endpoint'] as string | undefined,
      offline: Boolean(values.offline),
    });
  } catch (e) {
    if (e instanceof HubAccessError) {
      throw new UsageError(
        `${values['hub-endpoint'] !== undefined ? '--hub-endpoint' : 'HF_ENDPOINT'}: ${e.message}`,
      );
    }
    throw e;
  }
}
