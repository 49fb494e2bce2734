/**
 * <l2s-recipe-editor>: a recipe as a form and as mergekit YAML, kept in step through src/recipe.
 *
 * The YAML text is the one source of truth: the form is drawn from `parseRecipe(text)`, and every form
 * edit writes `recipeToYaml(edited recipe)` back. The form for each method is generated from its
 * ParamSpecs (defaults as placeholders, one-line docs as titles), so a new method needs no UI code.
 */
import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
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
  parseRecipe,
  type RecipeModel,
  recipeToYaml,
  validateRecipe,
} from '../recipe';
import type { ModelRecord } from '../store/library';
import { panelStyles } from './panel-styles';
import { PAPER_PRESETS, type RecipePreset } from './presets';

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

/** The smallest recipe a method accepts, over the first models of the library. */
function starterRecipe(method: MergeMethod, names: readonly string[]): MergeRecipe {
  const base = method.baseModel === 'unused' ? undefined : names[0];
  const others = method.baseModel === 'unused' ? names.slice(0, 2) : names.slice(1, 2);
  return {
    mergeMethod: method.name,
    baseModel: base,
    models: others.map((model) => ({ model, parameters: {} })),
    parameters: {},
    dtype: 'BF16',
  };
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
    `,
  ];

  @property({ attribute: false }) models: ModelRecord[] = [];
  /** The recipe as YAML; the page owns it and sets it back after every `recipe-change`. */
  @property() text = '';
  @state() private recipe?: MergeRecipe;
  @state() private parseError = '';
  @state() private validationError = '';
  /** Form fields whose text is not a number: kept aside so the YAML stays valid meanwhile. */
  @state() private invalidFields = new Set<string>();

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (!changed.has('text') && !changed.has('models')) return;
    // Marks belong to the text typed into a field; a new recipe redraws every field.
    if (changed.has('text') && this.invalidFields.size > 0) this.invalidFields = new Set();
    if (!this.text.trim()) {
      this.recipe = undefined;
      this.parseError = '';
      this.validationError = '';
      return;
    }
    try {
      this.recipe = parseRecipe(this.text, 'recipe');
      this.parseError = '';
      this.validationError = this.validate(this.recipe);
    } catch (e) {
      this.parseError = (e as Error).message;
    }
  }

  private validate(recipe: MergeRecipe): string {
    const method = METHODS.get(recipe.mergeMethod);
    if (!method) return `merge_method ${recipe.mergeMethod} is not one of: ${[...METHODS.keys()].join(', ')}`;
    try {
      validateRecipe(recipe, method, 'recipe');
    } catch (e) {
      return (e as Error).message;
    }
    const library = new Set(this.models.map((m) => m.name));
    const missing = [recipe.baseModel, ...recipe.models.map((m) => m.model)].filter(
      (name): name is string => name !== undefined && !library.has(name),
    );
    return missing.length ? `not in the library yet: ${missing.join(', ')}` : '';
  }

  private emit(text: string): void {
    this.dispatchEvent(new CustomEvent('recipe-change', { detail: text, bubbles: true, composed: true }));
  }

  private commit(recipe: MergeRecipe): void {
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
    // Keep the models; drop parameters the new method does not know.
    const known = new Set([...method.modelParams, ...method.globalParams].map((p) => p.name));
    const keep = (block: ParameterBlock) =>
      Object.fromEntries(Object.entries(block).filter(([k]) => known.has(k)));
    let baseModel = current.baseModel;
    let models = current.models.map((m) => ({ model: m.model, parameters: keep(m.parameters) }));
    if (method.baseModel === 'unused' && baseModel !== undefined) {
      models = [{ model: baseModel, parameters: {} }, ...models];
      baseModel = undefined;
    } else if (method.baseModel === 'required' && baseModel === undefined && models.length > 1) {
      baseModel = models[0].model;
      models = models.slice(1);
    }
    this.commit({ ...current, mergeMethod: name, baseModel, models, parameters: keep(current.parameters) });
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
    this.commit({ ...r, models: [...r.models, { model: next, parameters: {} }] });
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
    if (setting !== undefined && value === undefined) {
      return html`<label title=${spec.doc}>${spec.name}</label><span>per layer</span><span class="doc">a gradient or filter list: edit it in the YAML</span>`;
    }
    if (spec.type === 'boolean') {
      return html`<label title=${spec.doc}>${spec.name}</label>
        <select
          data-testid=${`param-${key}`}
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
    return html`<label title=${spec.doc}>${spec.name}${spec.required ? ' *' : ''}</label>
      <input
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

  private modelSelect(current: string, onChange: (name: string) => void, testid: string) {
    const names = this.models.map((m) => m.name);
    const options = names.includes(current) || !current ? names : [current, ...names];
    return html`<select data-testid=${testid} @change=${(e: Event) => onChange((e.target as HTMLSelectElement).value)}>
      ${options.map((n) => html`<option value=${n} ?selected=${n === current}>${n}${names.includes(n) ? '' : ' (not in library)'}</option>`)}
    </select>`;
  }

  private renderForm() {
    const r = this.recipe;
    const method = r ? METHODS.get(r.mergeMethod) : undefined;
    return html`
      <label
        >Method
        <select data-testid="recipe-method" @change=${(e: Event) => this.chooseMethod((e.target as HTMLSelectElement).value)}>
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
                  ${this.modelSelect(r.baseModel ?? '', (name) => this.commit({ ...r, baseModel: name || undefined }), 'recipe-base')}
                </label>`
                : nothing
            }
            ${r.models.map(
              (m: RecipeModel, i) => html`<div class="model" data-testid="recipe-model">
                ${this.modelSelect(m.model, (name) => this.setModel(i, name), `recipe-model-${i}`)}
                <button title="Remove this model" @click=${() => this.removeModel(i)}>Remove</button>
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

  override render() {
    return html`
      <section>
        <h2>Recipe</h2>
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
        ${this.validationError ? html`<p class="error" data-testid="recipe-error">${this.validationError}</p>` : nothing}
        <h3>mergekit YAML</h3>
        <textarea
          data-testid="recipe-yaml"
          spellcheck="false"
          .value=${this.text}
          @input=${(e: Event) => this.emit((e.target as HTMLTextAreaElement).value)}
        ></textarea>
        ${this.parseError ? html`<p class="error" data-testid="recipe-parse-error">${this.parseError}</p>` : nothing}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-recipe-editor': L2sRecipeEditor;
  }
}
