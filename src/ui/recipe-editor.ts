/**
 * <l2s-recipe-editor>: a recipe as a form and as mergekit YAML, kept in step through src/recipe.
 *
 * The YAML text is the one source of truth: the form is drawn from `parseRecipe(text)`, and every form
 * edit writes `recipeToYaml(edited recipe)` back. The form for each method is generated from its
 * ParamSpecs (defaults as placeholders, one-line docs as titles), so a new method needs no UI code.
 * While the YAML has a syntax error the form is read-only (and edits are refused), so what was typed
 * is never replaced by the last recipe that parsed.
 */
import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { live } from 'lit/directives/live.js';
import type { FloatDType } from '../formats/dtype';
import { METHODS } from '../methods';
import { AIM_DEFAULT_OMEGA } from '../methods/aim';
import type { MergeMethod, ParamSpec } from '../methods/types';
import {
  CALIBRATION_DEFAULTS,
  type CalibrationSettings,
  type MergeRecipe,
  type ParameterBlock,
  type ParameterSetting,
  parseHubModelRef,
  type RecipeModel,
  recipeToYaml,
} from '../recipe';
import type { ModelRecord } from '../store/library';
import { panelStyles } from './panel-styles';
import { PAPER_PRESETS, type RecipePreset } from './presets';
import { checkRecipe } from './recipe-check';

const DEFAULT_CALIBRATION: CalibrationSettings = { source: { kind: 'builtin' }, ...CALIBRATION_DEFAULTS };

const DTYPES: readonly { value: FloatDType | ''; label: string }[] = [
  { value: '', label: '(as the models)' },
  { value: 'BF16', label: 'bfloat16' },
  { value: 'F16', label: 'float16' },
  { value: 'F32', label: 'float32' },
];

function scalarOf(setting: ParameterSetting | undefined): number | boolean | undefined {
  return typeof setting === 'number' || typeof setting === 'boolean' ? setting : undefined;
}

function withParam(block: ParameterBlock, name: string, value: number | boolean | undefined): ParameterBlock {
  const next: Record<string, ParameterSetting> = { ...block };
  if (value === undefined) delete next[name];
  else next[name] = value;
  return next;
}

/**
 * Values the form writes for parameters a method requires and mergekit gives no default: the
 * plain choice (every model at full weight, the midpoint between two models).
 */
const REQUIRED_STARTER_VALUES: Readonly<Record<string, number>> = { weight: 1, t: 0.5 };

function starterValue(spec: ParamSpec): number | boolean {
  if (typeof spec.default === 'number' || typeof spec.default === 'boolean') return spec.default;
  return REQUIRED_STARTER_VALUES[spec.name] ?? 1;
}

/**
 * `recipe` with every parameter `method` requires and the recipe lacks filled in with its starter
 * value, so a method chosen in the form never opens into a "needs parameter" error.
 */
function withRequiredParams(recipe: MergeRecipe, method: MergeMethod): MergeRecipe {
  const parameters: Record<string, ParameterSetting> = { ...recipe.parameters };
  for (const spec of method.globalParams) {
    if (spec.required && !(spec.name in parameters)) parameters[spec.name] = starterValue(spec);
  }
  const models = recipe.models.map((m) => {
    if (m.model === recipe.baseModel) return m;
    const own: Record<string, ParameterSetting> = { ...m.parameters };
    for (const spec of method.modelParams) {
      if (spec.required && !(spec.name in own) && !(spec.name in parameters))
        own[spec.name] = starterValue(spec);
    }
    return { ...m, parameters: own };
  });
  return { ...recipe, parameters, models };
}

/** The smallest recipe a method accepts, over the first models of the library. */
function starterRecipe(method: MergeMethod, names: readonly string[]): MergeRecipe {
  const base = method.baseModel === 'unused' ? undefined : names[0];
  const others = method.baseModel === 'unused' ? names.slice(0, 2) : names.slice(1, 2);
  return withRequiredParams(
    {
      mergeMethod: method.name,
      baseModel: base,
      models: others.map((model) => ({ model, parameters: {} })),
      parameters: {},
      dtype: 'BF16',
    },
    method,
  );
}

@customElement('l2s-recipe-editor')
export class L2sRecipeEditor extends LitElement {
  static override styles = [
    panelStyles,
    css`
      textarea {
        width: 100%;
        box-sizing: border-box;
        min-height: 14em;
        font: 12px/1.4 ui-monospace, monospace;
      }
      .params {
        display: grid;
        grid-template-columns: max-content minmax(8em, max-content) 1fr;
        gap: 2px 8px;
        align-items: center;
        font-size: 13px;
      }
      .doc {
        color: #5d6677;
        font-size: 12px;
      }
      @media (max-width: 600px) {
        .params {
          grid-template-columns: max-content minmax(0, 1fr);
        }
        .params .doc {
          grid-column: 1 / -1;
          margin-bottom: 4px;
        }
      }
      .model {
        border-top: 1px solid #e7eaf0;
        padding: 4px 0;
      }
      .presets button {
        margin: 2px;
        font-size: 12px;
      }
      .invalid {
        outline: 2px solid #d33;
      }
      fieldset {
        border: 0;
        padding: 0;
        margin: 0;
        min-width: 0;
      }
      .notice {
        border: 1px solid #e0c36a;
        background: #fff8e1;
        border-radius: 4px;
        padding: 6px 10px;
      }
      .row {
        display: flex;
        gap: 8px;
        align-items: center;
        flex-wrap: wrap;
      }
      select.model-name {
        max-width: 100%;
        text-overflow: ellipsis;
      }
      .wrap {
        overflow-wrap: anywhere;
      }
      label.share {
        flex: 1;
        display: flex;
        gap: 6px;
        align-items: center;
      }
      label.share input {
        flex: 1;
        min-width: 0;
      }
    `,
  ];

  @property({ attribute: false }) models: ModelRecord[] = [];
  /** Hub repos the next merge reads straight from the hub (not in the library, no copy kept). */
  @property({ attribute: false }) streamed: string[] = [];
  /** Streamed repos the merge also keeps in the library ("Keep a copy in the library"). */
  @property({ attribute: false }) keptCopies: string[] = [];
  /** The recipe as YAML; the page owns it and sets it back after every `recipe-change`. */
  @property() text = '';
  @state() private recipe?: MergeRecipe;
  @state() private parseError = '';
  @state() private validationError = '';
  /** Models the recipe names that are not in the library but look like hub ids (offered for download). */
  @state() private missingHubIds: string[] = [];
  @state() private shareUrl = '';
  /** Parameters a method switch dropped, by owner (`model:<name>` or `global`), to restore later. */
  private readonly setAside = new Map<string, ParameterBlock>();
  @state() private shareNote = '';
  /** Form fields whose text is not a number: kept aside so the YAML stays valid meanwhile. */
  @state() private invalidFields = new Set<string>();

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (!changed.has('text') && !changed.has('models') && !changed.has('streamed')) return;
    // Marks belong to the text typed into a field; a new recipe redraws every field.
    if (changed.has('text') && this.invalidFields.size > 0) this.invalidFields = new Set();
    const check = checkRecipe(this.text, [...this.models.map((m) => m.name), ...this.streamed]);
    this.parseError = check.parseError ?? '';
    // While the YAML cannot be read the form keeps showing the last recipe that could, read-only.
    if (!check.parseError) this.recipe = check.recipe;
    this.validationError = check.error ?? '';
    this.missingHubIds = check.missingHubIds;
  }

  private emit(text: string): void {
    this.dispatchEvent(new CustomEvent('recipe-change', { detail: text, bubbles: true, composed: true }));
  }

  /**
   * Writes a form edit back as YAML. Refused while the YAML has a syntax error: the form then shows
   * an older recipe, and writing it would replace what was typed.
   */
  private commit(recipe: MergeRecipe): void {
    if (this.parseError) return;
    this.emit(recipeToYaml(recipe));
  }

  private chooseMethod(name: string): void {
    const method = METHODS.get(name);
    if (!method) return;
    const current = this.recipe;
    if (!current) {
      this.commit(
        starterRecipe(
          method,
          this.models.map((m) => m.name),
        ),
      );
      return;
    }
    // Keep the models and the parameters the new method knows. The others are set aside (per model,
    // in this tab) and come back when a method that knows them is chosen again: going from TIES to
    // linear and back keeps the densities.
    const known = new Set([...method.modelParams, ...method.globalParams].map((p) => p.name));
    const keep = (block: ParameterBlock, owner: string): ParameterBlock => {
      const aside = { ...this.setAside.get(owner), ...block };
      const kept = Object.fromEntries(Object.entries(aside).filter(([k]) => known.has(k)));
      this.setAside.set(owner, Object.fromEntries(Object.entries(aside).filter(([k]) => !known.has(k))));
      return kept;
    };
    let baseModel = current.baseModel;
    let models = current.models.map((m) => ({
      model: m.model,
      parameters: keep(m.parameters, `model:${m.model}`),
    }));
    if (method.baseModel === 'unused' && baseModel !== undefined) {
      models = [{ model: baseModel, parameters: {} }, ...models];
      baseModel = undefined;
    } else if (method.baseModel === 'required' && baseModel === undefined && models.length > 1) {
      baseModel = models[0].model;
      models = models.slice(1);
    }
    if (method.baseModel === 'required' && baseModel === undefined) {
      baseModel = this.models.find((m) => !models.some((x) => x.model === m.name))?.name;
    }
    // slerp interpolates exactly two models: the base and the first of the others.
    if (method.name === 'slerp') models = models.filter((m) => m.model !== baseModel).slice(0, 1);
    this.commit(
      withRequiredParams(
        { ...current, mergeMethod: name, baseModel, models, parameters: keep(current.parameters, 'global') },
        method,
      ),
    );
  }

  private applyPreset(preset: RecipePreset): void {
    const method = METHODS.get(preset.mergeMethod);
    if (!method) return;
    const names = this.models.map((m) => m.name);
    const current = this.recipe ?? starterRecipe(method, names);
    const base = current.baseModel ?? current.models[0]?.model ?? names[0];
    let models = current.models.filter((m) => m.model !== base);
    if (models.length === 0) {
      const other = names.find((n) => n !== base);
      models = other ? [{ model: other, parameters: {} }] : [];
    }
    this.commit({
      ...current,
      mergeMethod: preset.mergeMethod,
      baseModel: base,
      models: models.map((m) => ({ model: m.model, parameters: { ...preset.modelParams } })),
      parameters: { ...preset.globalParams },
      dtype: current.dtype ?? 'BF16',
      aim: preset.aim,
    });
  }

  /** AIM on or off, or a new omega; the calibration settings stay as the YAML has them. */
  private setAim(aim: MergeRecipe['aim']): void {
    const r = this.recipe;
    if (!r) return;
    this.commit({ ...r, aim });
  }

  private renderAim(r: MergeRecipe, method: MergeMethod) {
    if (method.baseModel === 'unused') return nothing;
    const aim = r.aim;
    const source = aim?.calibration.source;
    return html`<h3>AIM</h3>
      <label title="Activation-informed merging (Nobari et al. 2025)"
        ><input
          type="checkbox"
          data-testid="recipe-aim"
          .checked=${aim !== undefined}
          @change=${(e: Event) =>
            this.setAim(
              (e.target as HTMLInputElement).checked
                ? { omega: AIM_DEFAULT_OMEGA, calibration: DEFAULT_CALIBRATION }
                : undefined,
            )}
        />
        AIM on top of ${method.name}</label
      >
      <div class="doc">
        Runs the base model on calibration text first, then pulls each merged weight back toward the base in
        proportion to how active its input channel is there: W = base + (merged − base)(1 − (1 − ω)·I).
        ω = 1 is the plain merge.
      </div>
      ${
        aim
          ? html`<div class="params">
              <label title="omega: 1 keeps the plain merge, 0 restores the base on the most active channel">omega</label>
              <input
                type="number"
                step="any"
                min="0"
                max="1"
                data-testid="param-aim-omega"
                class=${this.invalidFields.has('aim-omega') ? 'invalid' : ''}
                .value=${String(aim.omega)}
                @input=${(e: Event) => this.markField('aim-omega', e.target as HTMLInputElement)}
                @change=${(e: Event) => {
                  const input = e.target as HTMLInputElement;
                  const v = Number(input.value);
                  if (!this.markField('aim-omega', input) || input.value.trim() === '' || v < 0 || v > 1)
                    return;
                  this.setAim({ ...aim, omega: v });
                }}
              />
              <span class="doc">0.4 in the paper (AIM's README: 0.2 to 0.6)</span>
              <label>calibration</label>
              <span data-testid="aim-calibration"
                >${
                  source?.kind === 'hub'
                    ? `${source.dataset} (${source.field.join(' + ')})`
                    : source?.kind === 'file'
                      ? source.path
                      : 'built-in questions'
                }</span
              >
              <span class="doc"
                >${aim.calibration.samples} samples, ${aim.calibration.blockSize}-token blocks, seed ${aim.calibration.seed}${aim.statistics ? `; statistics from ${aim.statistics}` : ''} (edit in the YAML)</span
              >
            </div>`
          : nothing
      }`;
  }

  private setModelParam(index: number, name: string, value: number | boolean | undefined): void {
    const r = this.recipe;
    if (!r) return;
    const models = r.models.map((m, i) =>
      i === index ? { ...m, parameters: withParam(m.parameters, name, value) } : m,
    );
    this.commit({ ...r, models });
  }

  private setGlobalParam(name: string, value: number | boolean | undefined): void {
    const r = this.recipe;
    if (!r) return;
    this.commit({ ...r, parameters: withParam(r.parameters, name, value) });
  }

  private setModel(index: number, model: string): void {
    const r = this.recipe;
    if (!r) return;
    this.commit({ ...r, models: r.models.map((m, i) => (i === index ? { ...m, model } : m)) });
  }

  private addModel(): void {
    const r = this.recipe;
    if (!r) return;
    const used = new Set([r.baseModel, ...r.models.map((m) => m.model)]);
    const next = this.models.find((m) => !used.has(m.name))?.name ?? '';
    const method = METHODS.get(r.mergeMethod);
    const added = { ...r, models: [...r.models, { model: next, parameters: {} }] };
    this.commit(method ? withRequiredParams(added, method) : added);
  }

  private removeModel(index: number): void {
    const r = this.recipe;
    if (!r) return;
    this.commit({ ...r, models: r.models.filter((_, i) => i !== index) });
  }

  /** One form row for a parameter; `key` identifies the field for invalid-input marking. */
  private paramField(
    spec: ParamSpec,
    setting: ParameterSetting | undefined,
    key: string,
    set: (v: number | boolean | undefined) => void,
  ) {
    const value = scalarOf(setting);
    const id = `param-${key}`;
    if (setting !== undefined && value === undefined) {
      return html`<span title=${spec.doc}>${spec.name}</span><span>per layer</span><span class="doc">a gradient or filter list: edit it in the YAML</span>`;
    }
    if (spec.type === 'boolean') {
      return html`<label for=${id} title=${spec.doc}>${spec.name}</label>
        <select
          id=${id}
          data-testid=${`param-${key}`}
          .value=${live(value === undefined ? '' : String(value))}
          @change=${(e: Event) => {
            const v = (e.target as HTMLSelectElement).value;
            set(v === '' ? undefined : v === 'true');
          }}
        >
          <option value="" ?selected=${value === undefined}>default: ${String(spec.default ?? 'unset')}</option>
          <option value="true" ?selected=${value === true}>true</option>
          <option value="false" ?selected=${value === false}>false</option>
        </select>
        <span class="doc">${spec.doc}</span>`;
    }
    return html`<label for=${id} title=${spec.doc}>${spec.name}${spec.required ? ' *' : ''}</label>
      <input
        id=${id}
        type="number"
        step="any"
        data-testid=${`param-${key}`}
        class=${this.invalidFields.has(key) ? 'invalid' : ''}
        placeholder=${spec.default === undefined ? 'required' : String(spec.default)}
        .value=${typeof value === 'number' ? String(value) : ''}
        @input=${(e: Event) => this.markField(key, e.target as HTMLInputElement)}
        @change=${(e: Event) => {
          const input = e.target as HTMLInputElement;
          if (!this.markField(key, input)) return;
          const text = input.value.trim();
          set(text === '' ? undefined : Number(text));
        }}
      />
      <span class="doc">${spec.doc}</span>`;
  }

  /**
   * Marks a number field whose text is not a finite number; returns whether it is usable. A number
   * input reports text it cannot read ("1e") as an empty value with `badInput` set.
   */
  private markField(key: string, input: HTMLInputElement): boolean {
    const text = input.value.trim();
    const ok = !input.validity.badInput && (text === '' || Number.isFinite(Number(text)));
    if (ok !== !this.invalidFields.has(key)) {
      const next = new Set(this.invalidFields);
      if (ok) next.delete(key);
      else next.add(key);
      this.invalidFields = next;
    }
    return ok;
  }

  private modelSelect(current: string, onChange: (name: string) => void, testid: string, label: string) {
    const names = this.models.map((m) => m.name);
    const options = names.includes(current) || !current ? names : [current, ...names];
    return html`<select
      class="model-name"
      aria-label=${label}
      title=${current}
      data-testid=${testid}
      .value=${live(current)}
      @change=${(e: Event) => onChange((e.target as HTMLSelectElement).value)}
    >
      ${options.length === 0 ? html`<option value="" selected>(no models in the library)</option>` : nothing}
      ${options.map((n) => html`<option value=${n} ?selected=${n === current}>${n}${names.includes(n) ? '' : ' (not in library)'}</option>`)}
    </select>`;
  }

  private renderForm() {
    const r = this.recipe;
    const method = r ? METHODS.get(r.mergeMethod) : undefined;
    return html`
      <label
        >Method
        <select
          data-testid="recipe-method"
          .value=${live(r?.mergeMethod ?? '')}
          @change=${(e: Event) => this.chooseMethod((e.target as HTMLSelectElement).value)}
        >
          ${r ? nothing : html`<option value="" selected>choose…</option>`}
          ${[...METHODS.values()].map(
            (m) =>
              html`<option value=${m.name} ?selected=${m.name === r?.mergeMethod} title=${m.summary}>${m.name}</option>`,
          )}
        </select>
      </label>
      ${method ? html`<div class="doc">${method.summary}</div>` : nothing}
      ${
        r && method
          ? html`
            ${
              method.baseModel !== 'unused'
                ? html`<label
                  >Base model (System 1)
                  ${this.modelSelect(r.baseModel ?? '', (name) => this.commit({ ...r, baseModel: name || undefined }), 'recipe-base', 'Base model')}
                </label>`
                : nothing
            }
            ${r.models.map(
              (m: RecipeModel, i) => html`<div class="model" data-testid="recipe-model">
                ${this.modelSelect(m.model, (name) => this.setModel(i, name), `recipe-model-${i}`, `Model ${i + 1}`)}
                <button title="Remove this model" aria-label=${`Remove model ${i + 1}`} @click=${() => this.removeModel(i)}>Remove</button>
                <div class="params">
                  ${method.modelParams.map((spec) =>
                    this.paramField(spec, m.parameters[spec.name], `${i}-${spec.name}`, (v) =>
                      this.setModelParam(i, spec.name, v),
                    ),
                  )}
                </div>
              </div>`,
            )}
            <button data-testid="recipe-add-model" @click=${this.addModel}>Add model</button>
            ${
              method.globalParams.length
                ? html`<h3>Parameters</h3>
                  <div class="params">
                    ${method.globalParams.map((spec) =>
                      this.paramField(spec, r.parameters[spec.name], `global-${spec.name}`, (v) =>
                        this.setGlobalParam(spec.name, v),
                      ),
                    )}
                  </div>`
                : nothing
            }
            <label
              >dtype
              <select
                data-testid="recipe-dtype"
                .value=${live(r.dtype ?? '')}
                @change=${(e: Event) => {
                  const v = (e.target as HTMLSelectElement).value as FloatDType | '';
                  this.commit({ ...r, dtype: v || undefined });
                }}
              >
                ${DTYPES.map((d) => html`<option value=${d.value} ?selected=${(r.dtype ?? '') === d.value}>${d.label}</option>`)}
              </select>
            </label>
            ${this.renderAim(r, method)}
          `
          : nothing
      }
    `;
  }

  /** The page's address with the recipe in its fragment (`#recipe=`), which the page loads on open. */
  private async share(): Promise<void> {
    const url = recipeShareUrl(this.text);
    this.shareUrl = url;
    try {
      await navigator.clipboard.writeText(url);
      this.shareNote =
        'Link copied. Anyone opening it gets this recipe (their library must hold its models).';
    } catch {
      this.shareNote = 'Copy this link: anyone opening it gets this recipe.';
    }
  }

  private renderHints() {
    const noModels = this.models.length === 0;
    return html`
      ${
        noModels
          ? html`<p class="hint" data-testid="recipe-import-prompt">
              No models in the library yet: import two or more (a folder or a hub repo id, under Import),
              or press "Try the L2S demo". The form fills in as they arrive.
            </p>`
          : nothing
      }
      ${
        this.validationError && !noModels
          ? html`<p class="error" data-testid="recipe-error">${this.validationError}</p>`
          : nothing
      }
      ${this.missingHubIds.map((repo) => {
        const revision = parseHubModelRef(repo)?.revision;
        return html`<p class="row" data-testid="recipe-missing-hub" data-repo=${repo}>
          <span class="wrap">${hubRefLabel(repo)} is not in the library.${
            revision === undefined
              ? nothing
              : html` A recipe naming a revision streams it (the library names a download by its repo id alone).`
          }</span>
          ${
            revision === undefined
              ? html`<button
                  data-testid="recipe-download-hub"
                  @click=${() =>
                    this.dispatchEvent(
                      new CustomEvent('hub-download-request', {
                        detail: repo,
                        bubbles: true,
                        composed: true,
                      }),
                    )}
                >
                  Download ${repo} from the hub
                </button>`
              : nothing
          }
          <button
            data-testid="recipe-stream-hub"
            title="The merge reads the tensors it needs from the hub with Range requests; every run downloads them again"
            @click=${() => this.requestStream(repo, true)}
          >
            Merge straight from the hub (no copy kept)
          </button>
        </p>`;
      })}
      ${this.streamed
        .filter((repo) => this.recipe && recipeNames(this.recipe).includes(repo))
        .map(
          (repo) => html`<p class="row" data-testid="recipe-streamed-hub" data-repo=${repo}>
            <span class="wrap">${hubRefLabel(repo)} streams from the hub when the merge runs (${
              parseHubModelRef(repo)?.revision === undefined
                ? ''
                : `pinned to the commit ${parseHubModelRef(repo)?.revision} is at when the merge starts; `
            }${
              this.keptCopies.includes(repo)
                ? 'a copy is kept in the library: what the merge reads is stored, the rest fetched when it ends'
                : 'no copy kept'
            }).</span>
            <label title="Every byte the merge reads is stored as it arrives; when the merge ends the rest is fetched, each file is checked against the hub's hashes, and the model is added to the library. Nothing is downloaded twice.">
              <input
                type="checkbox"
                data-testid="recipe-stream-keep"
                .checked=${this.keptCopies.includes(repo)}
                @change=${(e: Event) => this.requestKeep(repo, (e.target as HTMLInputElement).checked)}
              />
              Keep a copy in the library
            </label>
            <button data-testid="recipe-stream-undo" @click=${() => this.requestStream(repo, false)}>
              Don't stream
            </button>
          </p>`,
        )}
    `;
  }

  private requestKeep(repo: string, keep: boolean): void {
    this.dispatchEvent(
      new CustomEvent('hub-copy-request', { detail: { repo, keep }, bubbles: true, composed: true }),
    );
  }

  private requestStream(repo: string, stream: boolean): void {
    this.dispatchEvent(
      new CustomEvent('hub-stream-request', { detail: { repo, stream }, bubbles: true, composed: true }),
    );
  }

  override render() {
    const locked = this.parseError !== '';
    return html`
      <section>
        <h2>Recipe</h2>
        ${
          locked
            ? html`<p class="notice" data-testid="recipe-form-locked" role="status">
                The YAML below has an error, so the form is read-only until it is fixed there. Nothing you
                typed is changed.
              </p>`
            : nothing
        }
        <fieldset ?disabled=${locked} data-testid="recipe-form">
          <legend class="visually-hidden">Recipe form</legend>
          <div class="presets">
            Paper presets:
            ${PAPER_PRESETS.map(
              (p) => html`<button
                data-testid="preset"
                data-preset=${p.label}
                title=${`${p.note} (Wu et al. 2025, Table 7)`}
                @click=${() => this.applyPreset(p)}
              >
                ${p.label}
              </button>`,
            )}
          </div>
          ${this.renderForm()}
        </fieldset>
        ${this.renderHints()}
        <h3><label for="recipe-yaml">mergekit YAML</label></h3>
        <textarea
          id="recipe-yaml"
          data-testid="recipe-yaml"
          spellcheck="false"
          .value=${this.text}
          @input=${(e: Event) => this.emit((e.target as HTMLTextAreaElement).value)}
        ></textarea>
        ${this.parseError ? html`<p class="error" data-testid="recipe-parse-error">${this.parseError}</p>` : nothing}
        <div class="row">
          <button data-testid="recipe-share" ?disabled=${!this.text.trim()} @click=${this.share}>
            Share as a link
          </button>
          ${
            this.shareUrl
              ? html`<label class="share"
                  >Link
                  <input data-testid="recipe-share-url" readonly .value=${this.shareUrl} @focus=${(e: Event) => (e.target as HTMLInputElement).select()}
                /></label>`
              : nothing
          }
        </div>
        ${this.shareNote ? html`<p class="hint" data-testid="recipe-share-note">${this.shareNote}</p>` : nothing}
      </section>
    `;
  }
}

/** The fragment key a shared recipe travels under; the fragment never reaches a server. */
export const RECIPE_FRAGMENT_KEY = 'recipe';

export function recipeShareUrl(text: string, base: string = location.href): string {
  const url = new URL(base);
  url.hash = `${RECIPE_FRAGMENT_KEY}=${encodeURIComponent(text)}`;
  return url.toString();
}

/** The recipe a shared link carries, or undefined. */
export function recipeFromFragment(hash: string = location.hash): string | undefined {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const text = params.get(RECIPE_FRAGMENT_KEY);
  return text === null ? undefined : text;
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-recipe-editor': L2sRecipeEditor;
  }
}

/** A hub reference as the page words it: `owner/name`, or `owner/name at revision R`. */
function hubRefLabel(reference: string): string {
  const ref = parseHubModelRef(reference);
  return ref?.revision === undefined ? reference : `${ref.repo} at revision ${ref.revision}`;
}

function recipeNames(recipe: MergeRecipe): string[] {
  return [recipe.baseModel ?? '', ...recipe.models.map((m) => m.model)];
}
