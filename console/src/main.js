// The designer console: experiments, their configs with history and rollback, results, the live
// events and the audit log, over /graphql and /graphql/ws with the admin key (sessionStorage only).
import { html } from "htm/preact";
import { render } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { ApiError, graphql, subscribe } from "./api.js";
import { JsonDiff, JsonEditor } from "./editor.js";
import {
  formatDate,
  formatInteger,
  formatSize,
  formatLift,
  formatNumber,
  formatPercent,
  formatPValue,
} from "./format.js";
import { MAX_CONFIG_BYTES, checkCohorts, checkConfig, nameProblem, weightsChanged } from "./rules.js";

const KEY_STORAGE = "octp.console.adminKey";

// ---------------------------------------------------------------------------------------------
// Routing and data

function currentRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return parts[0] === "" ? ["experiments"] : parts;
}

function useRoute() {
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    const changed = () => setRoute(currentRoute());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

const link = (...parts) => `#/${parts.map(encodeURIComponent).join("/")}`;

/** Runs `query` whenever `deps` change; `reload` runs it again. */
function useQuery(session, query, variables, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let current = true;
    setState((previous) => ({ ...previous, loading: true }));
    session
      .call(query, variables)
      .then((data) => current && setState({ data, error: null, loading: false }))
      .catch((error) => current && setState({ data: null, error, loading: false }));
    return () => {
      current = false;
    };
  }, [...deps, generation]);
  return { ...state, reload: useCallback(() => setGeneration((n) => n + 1), []) };
}

// ---------------------------------------------------------------------------------------------
// Small parts

function Problem({ error }) {
  if (!error) return null;
  const message = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  return html`<p class="problem" role="alert">${message}</p>`;
}

function Loading() {
  return html`<p class="muted" role="status">Loading…</p>`;
}

function stateOf(experiment, now = Date.now()) {
  if (!experiment.active) return { label: "Off", tone: "off" };
  if (experiment.startAt && Date.parse(experiment.startAt) > now) return { label: "Scheduled", tone: "scheduled" };
  if (experiment.endAt && Date.parse(experiment.endAt) <= now) return { label: "Ended", tone: "ended" };
  return { label: "Running", tone: "running" };
}

function StateBadge({ experiment }) {
  const { label, tone } = stateOf(experiment);
  return html`<span class=${`badge badge-${tone}`}>${label}</span>`;
}

function windowOf(experiment) {
  if (!experiment.startAt && !experiment.endAt) return "Always";
  return `${experiment.startAt ? formatDate(experiment.startAt) : "now"} → ${
    experiment.endAt ? formatDate(experiment.endAt) : "no end"
  }`;
}

const PALETTE = ["#1f4e9c", "#a3471a", "#2d6a2d", "#6b3fa0", "#8a6d00", "#0f6b73", "#9c1f4e", "#4d4d4d"];

/** Cohort weights as one bar of shares, with the same figures as text for everyone. */
function WeightBar({ cohorts }) {
  const total = cohorts.reduce((sum, cohort) => sum + (cohort.weight > 0 ? cohort.weight : 0), 0);
  const shares = cohorts.map((cohort, index) => ({
    ...cohort,
    share: total > 0 && cohort.weight > 0 ? cohort.weight / total : 0,
    color: PALETTE[index % PALETTE.length],
  }));
  const description = shares.map((cohort) => `${cohort.name} ${formatPercent(cohort.share)}`).join(", ");
  return html`<div class="weights">
    <div class="weight-bar" role="img" aria-label=${`Split: ${description}`}>
      ${shares
        .filter((cohort) => cohort.share > 0)
        .map((cohort) => html`<span style=${{ width: `${cohort.share * 100}%`, background: cohort.color }}></span>`)}
    </div>
    <ul class="weight-legend" aria-hidden="true">
      ${shares.map(
        (cohort) =>
          html`<li><span class="swatch" style=${{ background: cohort.color }}></span>${cohort.name}
            ${" "}${formatPercent(cohort.share)}</li>`,
      )}
    </ul>
  </div>`;
}

function Field({ id, label, problem, hint, children }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint && html`<p class="hint" id=${`${id}-hint`}>${hint}</p>`}
    ${problem && html`<p class="field-problem" id=${`${id}-problem`}>${problem}</p>`}
  </div>`;
}

const describedBy = (id, problem, hint) =>
  [problem && `${id}-problem`, hint && `${id}-hint`].filter(Boolean).join(" ") || undefined;

function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const pad = (number) => String(number).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(
    date.getMinutes(),
  )}`;
}

const fromLocalInput = (value) => (value ? new Date(value).toISOString() : null);

// ---------------------------------------------------------------------------------------------
// Sign in

function SignIn({ onSignedIn, notice }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await graphql(key, "{ auditLog(first: 1) { nodes { id } } }");
      onSignedIn(key);
    } catch (failure) {
      setError(
        failure.code === "UNAUTHENTICATED"
          ? "The server does not know this key."
          : failure.code === "FORBIDDEN"
            ? "This key cannot change experiments: the console needs the admin key, not the http key."
            : failure.message,
      );
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="sign-in">
    <h1>OCTP console</h1>
    <p>Run experiments and their remote configs. Sign in with the server's admin key; it is kept in this
      tab only and forgotten when the tab closes.</p>
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    <form onSubmit=${submit}>
      <${Field} id="admin-key" label="Admin key" problem=${error}>
        <input id="admin-key" type="password" autocomplete="current-password" required value=${key}
          aria-describedby=${describedBy("admin-key", error)} aria-invalid=${error ? "true" : undefined}
          onInput=${(event) => setKey(event.currentTarget.value)} />
      </${Field}>
      <button type="submit" disabled=${busy || !key}>Sign in</button>
    </form>
  </main>`;
}

// ---------------------------------------------------------------------------------------------
// Experiments

const EXPERIMENT_FIELDS = `id name description active startAt endAt createdAt updatedAt
  cohorts { name weight } metrics { key eventName kind property windowHours }`;

function ExperimentList({ session }) {
  const { data, error, loading } = useQuery(
    session,
    `{ experiments { ${EXPERIMENT_FIELDS} } }`,
    {},
    [],
  );
  return html`<section aria-labelledby="experiments-heading">
    <div class="heading-row">
      <h1 id="experiments-heading">Experiments</h1>
      <a class="button" href=${link("new")}>New experiment</a>
    </div>
    <${Problem} error=${error} />
    ${loading && !data && html`<${Loading} />`}
    ${data &&
    (data.experiments.length === 0
      ? html`<p>No experiment yet. <a href=${link("new")}>Create the first one</a>.</p>`
      : html`<table class="experiments">
          <thead><tr><th scope="col">Experiment</th><th scope="col">State</th><th scope="col">Window</th>
            <th scope="col">Cohorts</th><th scope="col">Updated</th></tr></thead>
          <tbody>
            ${data.experiments.map(
              (experiment) => html`<tr>
                <th scope="row"><a href=${link("experiment", experiment.id)}>${experiment.name}</a>
                  <div class="muted mono">${experiment.id}</div></th>
                <td><${StateBadge} experiment=${experiment} /></td>
                <td>${windowOf(experiment)}</td>
                <td><${WeightBar} cohorts=${experiment.cohorts} /></td>
                <td>${formatDate(experiment.updatedAt)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`)}
  </section>`;
}

const BLANK_EXPERIMENT = {
  id: "",
  name: "",
  description: "",
  active: true,
  startAt: null,
  endAt: null,
  cohorts: [
    { name: "control", weight: 1 },
    { name: "treatment", weight: 1 },
  ],
  metrics: [],
};

const METRIC_KINDS = ["CONVERSION", "COUNT", "SUM"];

function metricProblem(metric) {
  return (
    nameProblem(metric.key, "The key") ??
    nameProblem(metric.eventName, "The event name") ??
    (metric.kind === "SUM" && !metric.property ? "A SUM adds up a property: name it." : null) ??
    (metric.windowHours !== "" && !(Number(metric.windowHours) > 0) ? "The window is a number of hours above 0." : null)
  );
}

/** Create (no `stored`) or change an experiment, with §4's rules checked as the designer types. */
function ExperimentForm({ session, stored, onSaved }) {
  const start = stored ?? BLANK_EXPERIMENT;
  const [id, setId] = useState(start.id);
  const [name, setName] = useState(start.name);
  const [description, setDescription] = useState(start.description ?? "");
  const [active, setActive] = useState(start.active);
  const [startAt, setStartAt] = useState(toLocalInput(start.startAt));
  const [endAt, setEndAt] = useState(toLocalInput(start.endAt));
  const [cohorts, setCohorts] = useState(start.cohorts.map((cohort) => ({ ...cohort, weight: String(cohort.weight) })));
  const [metrics, setMetrics] = useState(
    start.metrics.map((metric) => ({
      ...metric,
      property: metric.property ?? "",
      windowHours: metric.windowHours == null ? "" : String(metric.windowHours),
    })),
  );
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const idProblem = stored ? null : nameProblem(id.trim(), "The id");
  const nameProblemText = name.trim() ? null : "A name is required.";
  const checked = checkCohorts(cohorts);
  const windowProblem =
    startAt && endAt && Date.parse(fromLocalInput(startAt)) >= Date.parse(fromLocalInput(endAt))
      ? "The end must come after the start."
      : null;
  const metricProblems = metrics.map(metricProblem);
  const invalid =
    idProblem || nameProblemText || checked.overall || checked.rows.some(Boolean) || windowProblem || metricProblems.some(Boolean);
  const storedWeights = stored ? Object.fromEntries(stored.cohorts.map((cohort) => [cohort.name, cohort.weight])) : null;
  const newPhase = stored && !checked.rows.some(Boolean) && weightsChanged(storedWeights, checked.weights);

  const setCohort = (index, change) =>
    setCohorts((rows) => rows.map((row, at) => (at === index ? { ...row, ...change } : row)));
  const setMetric = (index, change) =>
    setMetrics((rows) => rows.map((row, at) => (at === index ? { ...row, ...change } : row)));

  const save = async (event) => {
    event.preventDefault();
    if (invalid) return;
    setBusy(true);
    setError(null);
    try {
      const input = {
        id: stored ? stored.id : id.trim(),
        name: name.trim(),
        description: description.trim() || null,
        cohorts: checked.weights,
        active,
        startAt: fromLocalInput(startAt),
        endAt: fromLocalInput(endAt),
        metrics: metrics.map((metric) => ({
          key: metric.key,
          eventName: metric.eventName,
          kind: metric.kind,
          property: metric.property || null,
          windowHours: metric.windowHours === "" ? null : Number(metric.windowHours),
        })),
      };
      const data = await session.call(
        `mutation($input: ExperimentInput!) { upsertExperiment(input: $input) { id } }`,
        { input },
      );
      onSaved(data.upsertExperiment.id);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  return html`<form class="experiment-form" onSubmit=${save} aria-label=${stored ? "Experiment settings" : "New experiment"}>
    ${!stored &&
    html`<${Field} id="experiment-id" label="Id (used by the game; cannot change later)" problem=${id && idProblem}>
      <input id="experiment-id" value=${id} required aria-invalid=${id && idProblem ? "true" : undefined}
        aria-describedby=${describedBy("experiment-id", id && idProblem)}
        onInput=${(event) => setId(event.currentTarget.value)} />
    </${Field}>`}
    <${Field} id="experiment-name" label="Name" problem=${name === "" && stored ? nameProblemText : null}>
      <input id="experiment-name" value=${name} required onInput=${(event) => setName(event.currentTarget.value)} />
    </${Field}>
    <${Field} id="experiment-description" label="Description (optional)">
      <textarea id="experiment-description" rows="2" value=${description}
        onInput=${(event) => setDescription(event.currentTarget.value)}></textarea>
    </${Field}>
    <div class="field checkbox">
      <input id="experiment-active" type="checkbox" checked=${active}
        onChange=${(event) => setActive(event.currentTarget.checked)} />
      <label for="experiment-active">Active (players are assigned while inside the window)</label>
    </div>
    <div class="row">
      <${Field} id="experiment-start" label="Starts (optional)">
        <input id="experiment-start" type="datetime-local" value=${startAt}
          onInput=${(event) => setStartAt(event.currentTarget.value)} />
      </${Field}>
      <${Field} id="experiment-end" label="Ends (optional)" problem=${windowProblem}>
        <input id="experiment-end" type="datetime-local" value=${endAt}
          aria-describedby=${describedBy("experiment-end", windowProblem)}
          onInput=${(event) => setEndAt(event.currentTarget.value)} />
      </${Field}>
    </div>

    <fieldset>
      <legend>Cohorts and weights</legend>
      <p class="hint">Players are split in proportion to the weights (1 to 20 cohorts, weights ≥ 0, at least one above 0).</p>
      ${cohorts.map(
        (cohort, index) => html`<div class="cohort-row">
          <${Field} id=${`cohort-name-${index}`} label=${`Cohort ${index + 1} name`} problem=${checked.rows[index]}>
            <input id=${`cohort-name-${index}`} value=${cohort.name}
              aria-invalid=${checked.rows[index] ? "true" : undefined}
              aria-describedby=${describedBy(`cohort-name-${index}`, checked.rows[index])}
              onInput=${(event) => setCohort(index, { name: event.currentTarget.value })} />
          </${Field}>
          <${Field} id=${`cohort-weight-${index}`} label=${`Cohort ${index + 1} weight`}>
            <input id=${`cohort-weight-${index}`} type="number" min="0" step="any" value=${cohort.weight}
              onInput=${(event) => setCohort(index, { weight: event.currentTarget.value })} />
          </${Field}>
          <button type="button" class="secondary" aria-label=${`Remove cohort ${cohort.name || index + 1}`}
            onClick=${() => setCohorts((rows) => rows.filter((_, at) => at !== index))}>Remove</button>
        </div>`,
      )}
      <button type="button" class="secondary" disabled=${cohorts.length >= 20}
        onClick=${() => setCohorts((rows) => [...rows, { name: "", weight: "1" }])}>Add a cohort</button>
      ${checked.overall && html`<p class="field-problem" role="alert">${checked.overall}</p>`}
      ${!checked.overall &&
      !checked.rows.some(Boolean) &&
      html`<${WeightBar} cohorts=${cohorts.map((cohort) => ({ name: cohort.name, weight: Number(cohort.weight) }))} />`}
      ${newPhase &&
      html`<p class="warning" role="status">Changing the weights starts a new phase: players already assigned keep
        their cohort, new players are split by the new weights, and results compare each phase with the split it
        had.</p>`}
    </fieldset>

    <fieldset>
      <legend>Metrics</legend>
      <p class="hint">What the results measure for each player, from their events after assignment.</p>
      ${metrics.map(
        (metric, index) => html`<div class="metric-row">
          <${Field} id=${`metric-key-${index}`} label="Key" problem=${metricProblems[index]}>
            <input id=${`metric-key-${index}`} value=${metric.key}
              aria-describedby=${describedBy(`metric-key-${index}`, metricProblems[index])}
              onInput=${(event) => setMetric(index, { key: event.currentTarget.value })} />
          </${Field}>
          <${Field} id=${`metric-event-${index}`} label="Event name">
            <input id=${`metric-event-${index}`} value=${metric.eventName}
              onInput=${(event) => setMetric(index, { eventName: event.currentTarget.value })} />
          </${Field}>
          <${Field} id=${`metric-kind-${index}`} label="Kind">
            <select id=${`metric-kind-${index}`} value=${metric.kind}
              onChange=${(event) => setMetric(index, { kind: event.currentTarget.value })}>
              ${METRIC_KINDS.map((kind) => html`<option value=${kind}>${kind}</option>`)}
            </select>
          </${Field}>
          <${Field} id=${`metric-property-${index}`} label="Property (SUM)">
            <input id=${`metric-property-${index}`} value=${metric.property}
              onInput=${(event) => setMetric(index, { property: event.currentTarget.value })} />
          </${Field}>
          <${Field} id=${`metric-window-${index}`} label="Window, hours (optional)">
            <input id=${`metric-window-${index}`} type="number" min="0" step="any" value=${metric.windowHours}
              onInput=${(event) => setMetric(index, { windowHours: event.currentTarget.value })} />
          </${Field}>
          <button type="button" class="secondary" aria-label=${`Remove metric ${metric.key || index + 1}`}
            onClick=${() => setMetrics((rows) => rows.filter((_, at) => at !== index))}>Remove</button>
        </div>`,
      )}
      <button type="button" class="secondary"
        onClick=${() =>
          setMetrics((rows) => [...rows, { key: "", eventName: "", kind: "CONVERSION", property: "", windowHours: "" }])}>
        Add a metric</button>
    </fieldset>

    <${Problem} error=${error} />
    <button type="submit" disabled=${busy || Boolean(invalid)}>${stored ? "Save changes" : "Create experiment"}</button>
  </form>`;
}

function NewExperiment({ session }) {
  return html`<section aria-labelledby="new-heading">
    <h1 id="new-heading">New experiment</h1>
    <${ExperimentForm} session=${session} onSaved=${(id) => (location.hash = link("experiment", id))} />
  </section>`;
}

function ExperimentPage({ session, id }) {
  const { data, error, loading, reload } = useQuery(
    session,
    `query($id: String!) { experiment(id: $id) { ${EXPERIMENT_FIELDS}
      history { at actor active startAt endAt cohorts { name weight } } } }`,
    { id },
    [id],
  );
  const [toggleError, setToggleError] = useState(null);
  const [saved, setSaved] = useState(false);
  if (loading && !data) return html`<${Loading} />`;
  if (error) return html`<${Problem} error=${error} />`;
  const experiment = data.experiment;
  if (!experiment) return html`<p role="alert">No experiment has the id ${id}. <a href=${link()}>All experiments</a></p>`;
  const toggle = async () => {
    setToggleError(null);
    try {
      await session.call(`mutation($id: String!, $active: Boolean!) { setExperimentActive(id: $id, active: $active) { id } }`, {
        id,
        active: !experiment.active,
      });
      reload();
    } catch (failure) {
      setToggleError(failure);
    }
  };
  const cohortsWithDefault = [...experiment.cohorts.map((cohort) => cohort.name), "default"];
  return html`<section aria-labelledby="experiment-heading">
    <p><a href=${link()}>← All experiments</a></p>
    <div class="heading-row">
      <h1 id="experiment-heading">${experiment.name} <${StateBadge} experiment=${experiment} /></h1>
      <div class="actions">
        <a class="button" href=${link("experiment", id, "results")}>Results</a>
        <button type="button" class="secondary" onClick=${toggle}>${experiment.active ? "Deactivate" : "Activate"}</button>
      </div>
    </div>
    <p class="muted mono">${experiment.id} · ${windowOf(experiment)}</p>
    ${experiment.description && html`<p>${experiment.description}</p>`}
    <${Problem} error=${toggleError} />
    <${WeightBar} cohorts=${experiment.cohorts} />

    <h2>Configs</h2>
    <p class="hint">Each cohort's config is laid over the global default for its players; <code>default</code> serves
      players of this experiment whose cohort has none.</p>
    ${cohortsWithDefault.map(
      (cohort) => html`<${ConfigVariant} key=${`${id}/${cohort}`} session=${session} experimentId=${id} cohort=${cohort} />`,
    )}

    <h2>Settings</h2>
    ${saved && html`<p class="notice" role="status">Saved.</p>`}
    <${ExperimentForm} key=${experiment.updatedAt} session=${session} stored=${experiment}
      onSaved=${() => {
        setSaved(true);
        reload();
      }} />

    <h2>Phases</h2>
    <p class="hint">Every change of the experiment, oldest first; a change of weights starts a new phase of the results.</p>
    <ol class="phases">
      ${experiment.history.map(
        (change) => html`<li>
          <strong>${formatDate(change.at)}</strong> by ${change.actor}: ${change.active ? "active" : "off"},
          ${" "}${change.cohorts.map((cohort) => `${cohort.name} ${formatNumber(cohort.weight)}`).join(" · ")}
        </li>`,
      )}
    </ol>
  </section>`;
}

// ---------------------------------------------------------------------------------------------
// Configs: editor, diff, conflicts, history and rollback

const HISTORY_QUERY = `query($e: String, $c: String, $after: String) {
  configHistory(experimentId: $e, cohort: $c, first: 20, after: $after) {
    nodes { version config createdAt actor note rolledBackFrom }
    pageInfo { hasNextPage endCursor } } }`;

const pretty = (value) => JSON.stringify(value, null, 2);

function ConfigVariant({ session, experimentId, cohort }) {
  const title = experimentId ? `${cohort}` : "Global default";
  const variables = { e: experimentId ?? null, c: experimentId ? cohort : null };
  const { data, error, loading, reload } = useQuery(session, HISTORY_QUERY, variables, [experimentId, cohort]);
  const [text, setText] = useState(null);
  // Moves whenever the page, not the designer, sets the editor's text.
  const [revision, setRevision] = useState(0);
  const replaceText = (replacement) => {
    setText(replacement);
    setRevision((count) => count + 1);
  };
  const [reviewing, setReviewing] = useState(false);
  const [note, setNote] = useState("");
  const [outcome, setOutcome] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [busy, setBusy] = useState(false);
  const [older, setOlder] = useState({ nodes: [], pageInfo: null });
  const [showHistory, setShowHistory] = useState(false);
  const [failure, setFailure] = useState(null);
  // The stored text the edit started from: a reload replaces an untouched editor's text, never an edit.
  const [base, setBase] = useState(null);

  const versions = data ? [...data.configHistory.nodes, ...older.nodes] : [];
  const stored = data?.configHistory.nodes[0] ?? null;
  const storedText = stored ? pretty(stored.config) : "{}";
  const storedVersion = stored?.version ?? 0;
  useEffect(() => {
    if (!data) return;
    if (text === null || text === base) replaceText(storedText);
    setBase(storedText);
  }, [data]);

  if (loading && !data) return html`<${Loading} />`;
  if (error) return html`<${Problem} error=${error} />`;
  const editing = text ?? storedText;
  const checked = checkConfig(editing);
  const dirty = editing !== storedText;
  const headingId = `config-${experimentId ?? "global"}-${cohort}`;

  const afterWrite = (message) => {
    setOutcome(message);
    setReviewing(false);
    setNote("");
    setConflict(null);
    setOlder({ nodes: [], pageInfo: null });
    setText(null);
    reload();
  };
  const failed = (error) => {
    setOutcome(null);
    if (error.code === "CONFLICT") {
      setConflict(error.message);
      setReviewing(false);
    } else {
      setFailure(error);
    }
  };

  const save = async () => {
    setBusy(true);
    setFailure(null);
    try {
      const data = await session.call(
        `mutation($e: String, $c: String, $config: JSON!, $expected: Int, $note: String) {
          updateRemoteConfig(experimentId: $e, cohort: $c, config: $config, expectedVersion: $expected, note: $note) { version } }`,
        { ...variables, config: checked.value, expected: storedVersion, note: note.trim() || null },
      );
      afterWrite(`Saved as version ${data.updateRemoteConfig.version}.`);
    } catch (failure) {
      failed(failure);
    } finally {
      setBusy(false);
    }
  };
  const rollback = async (version) => {
    setBusy(true);
    setFailure(null);
    try {
      const data = await session.call(
        `mutation($e: String, $c: String, $to: Int!, $expected: Int) {
          rollbackRemoteConfig(experimentId: $e, cohort: $c, toVersion: $to, expectedVersion: $expected) { version } }`,
        { ...variables, to: version, expected: storedVersion },
      );
      afterWrite(`Version ${version} is live again, as version ${data.rollbackRemoteConfig.version}.`);
    } catch (failure) {
      failed(failure);
    } finally {
      setBusy(false);
    }
  };
  const lastPage = older.pageInfo ?? data.configHistory.pageInfo;
  const loadOlder = async () => {
    try {
      const more = await session.call(HISTORY_QUERY, { ...variables, after: lastPage.endCursor });
      setOlder({ nodes: [...older.nodes, ...more.configHistory.nodes], pageInfo: more.configHistory.pageInfo });
    } catch (error) {
      setFailure(error);
    }
  };
  const hasMore = lastPage.hasNextPage;

  return html`<section class="config" aria-labelledby=${headingId} data-testid=${`config-${cohort}`}>
    <h3 id=${headingId}>${title} <span class="muted">· version ${storedVersion}${
      stored ? `, ${formatDate(stored.createdAt)} by ${stored.actor}` : ", not set yet"
    }</span></h3>
    <${JsonEditor} value=${editing} revision=${revision}
      onChange=${(edited) => {
        setText(edited);
        setOutcome(null);
      }} label=${`Config of ${title}`} testId=${`editor-${cohort}`} />
    <p class=${checked.problem ? "field-problem" : "hint"} role=${checked.problem ? "alert" : undefined}>
      ${checked.problem ?? `${formatSize(checked.bytes)} of ${formatSize(MAX_CONFIG_BYTES)}`}
    </p>
    ${conflict &&
    html`<div class="problem" role="alert">
      <p><strong>Someone else changed this config</strong> after you opened it (${conflict}). Nothing was saved.
        Reload to see their version; your edit stays in the editor so you can apply it again.</p>
      <button type="button" onClick=${() => {
        setConflict(null);
        setOlder({ nodes: [], pageInfo: null });
        reload();
      }}>Reload the stored version</button>
    </div>`}
    <${Problem} error=${failure} />
    ${outcome && html`<p class="notice" role="status">${outcome}</p>`}
    <div class="actions">
      <button type="button" disabled=${!dirty || Boolean(checked.problem) || busy}
        onClick=${() => setReviewing(true)}>Review changes</button>
      <button type="button" class="secondary" disabled=${!dirty || busy} onClick=${() => replaceText(storedText)}>Discard edit</button>
      <button type="button" class="secondary" aria-expanded=${showHistory ? "true" : "false"}
        onClick=${() => setShowHistory(!showHistory)}>History (${versions.length}${hasMore ? "+" : ""})</button>
    </div>
    ${reviewing &&
    !checked.problem &&
    html`<div class="review" role="region" aria-label=${`Changes to ${title}`}>
      <${JsonDiff} stored=${storedText} edited=${pretty(checked.value)} />
      <${Field} id=${`${headingId}-note`} label="Note for the history (optional)">
        <input id=${`${headingId}-note`} value=${note} onInput=${(event) => setNote(event.currentTarget.value)} />
      </${Field}>
      <div class="actions">
        <button type="button" disabled=${busy} onClick=${save}>Save as version ${storedVersion + 1}</button>
        <button type="button" class="secondary" onClick=${() => setReviewing(false)}>Back to editing</button>
      </div>
    </div>`}
    ${showHistory &&
    html`<table class="history">
      <caption>Versions of ${title}, newest first</caption>
      <thead><tr><th scope="col">Version</th><th scope="col">Saved</th><th scope="col">By</th><th scope="col">Note</th>
        <th scope="col">Config</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
      <tbody>
        ${versions.map(
          (version) => html`<tr>
            <td>${version.version}${version.rolledBackFrom != null ? html` <span class="muted">(rollback to ${version.rolledBackFrom})</span>` : ""}</td>
            <td>${formatDate(version.createdAt)}</td>
            <td>${version.actor}</td>
            <td>${version.note ?? ""}</td>
            <td><code class="config-preview">${JSON.stringify(version.config)}</code></td>
            <td>${version.version === storedVersion
              ? html`<span class="muted">live</span>`
              : html`<button type="button" class="secondary" disabled=${busy}
                  onClick=${() => rollback(version.version)}>Roll back to ${version.version}</button>`}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${hasMore && html`<button type="button" class="secondary" onClick=${loadOlder}>Older versions</button>`}`}
  </section>`;
}

function GlobalConfig({ session }) {
  return html`<section aria-labelledby="global-heading">
    <h1 id="global-heading">Global default config</h1>
    <p class="hint">Served to every player; each active experiment's config for the player's cohort is laid over it.</p>
    <${ConfigVariant} session=${session} experimentId=${null} cohort="default" />
  </section>`;
}

// ---------------------------------------------------------------------------------------------
// Results

/** The lift's interval as a bar on an axis centred on zero; the point estimate as a tick. */
function LiftInterval({ lift, interval, significant, scale }) {
  if (lift == null || !interval) return html`<span class="muted">—</span>`;
  const width = 220;
  const x = (value) => width / 2 + (Math.max(-scale, Math.min(scale, value)) / scale) * (width / 2 - 6);
  const tone = !significant ? "#6b7280" : lift > 0 ? "#1a7f37" : "#b42318";
  const label = `Lift ${formatLift(lift)}, interval ${formatLift(interval[0])} to ${formatLift(interval[1])}`;
  return html`<svg class="interval" width=${width} height="24" role="img" aria-label=${label}>
    <line x1=${width / 2} x2=${width / 2} y1="2" y2="22" stroke="#111" stroke-width="1" />
    <rect x=${x(interval[0])} width=${Math.max(2, x(interval[1]) - x(interval[0]))} y="8" height="8" rx="2" fill=${tone} opacity="0.35" />
    <line x1=${x(lift)} x2=${x(lift)} y1="5" y2="19" stroke=${tone} stroke-width="3" />
  </svg>`;
}

const RESULTS_QUERY = `query($id: String!, $alpha: Float) {
  experiment(id: $id) { id name cohorts { name weight } history { at cohorts { name weight } } }
  experimentResults(experimentId: $id, alpha: $alpha) {
    control alpha users computedAt
    cohorts { cohort users observedShare expectedShare }
    srm { checked ok chiSquare pValue }
    metrics { metric { key eventName kind property windowHours }
      cohorts { cohort users mean stddev total lift liftCi pValue chanceToBeatControl significant } } } }`;

function phasesOf(history) {
  const phases = [];
  for (const change of history) {
    const weights = change.cohorts.map((cohort) => `${cohort.name} ${formatNumber(cohort.weight)}`).join(" · ");
    if (phases.length === 0 || phases[phases.length - 1].weights !== weights) phases.push({ from: change.at, weights });
  }
  return phases;
}

function Results({ session, id }) {
  const { data, error, loading, reload } = useQuery(session, RESULTS_QUERY, { id, alpha: 0.05 }, [id]);
  if (loading && !data) return html`<${Loading} />`;
  const back = html`<p><a href=${link("experiment", id)}>← The experiment</a></p>`;
  if (error) {
    const noMetrics = error.code === "BAD_USER_INPUT" && /metric/i.test(error.message);
    return html`<section>${back}<h1>Results</h1><${Problem} error=${error} />
      ${noMetrics && html`<p>Add metrics in the experiment's settings, then come back.</p>`}</section>`;
  }
  const { experiment, experimentResults: results } = data;
  const srm = results.srm;
  return html`<section aria-labelledby="results-heading">
    ${back}
    ${srm.checked &&
    !srm.ok &&
    html`<div class="srm" role="alert">
      <h2>Sample ratio mismatch: do not trust these results yet</h2>
      <p>The cohorts hold a different share of players than the weights promise (χ² ${formatNumber(srm.chiSquare)},
        p = ${formatPValue(srm.pValue)}). Something assigns or counts players unevenly, such as a cohort that crashes
        or events that are lost for one cohort. Find the cause before reading the metrics.</p>
    </div>`}
    <div class="heading-row">
      <h1 id="results-heading">Results: ${experiment?.name ?? id}</h1>
      <button type="button" class="secondary" onClick=${reload}>Recompute</button>
    </div>
    <p class="muted">${formatInteger(results.users)} players analysed · control: ${results.control} ·
      significance at ${formatPercent(results.alpha)} · computed ${formatDate(results.computedAt)}</p>

    <h2>Players per cohort</h2>
    <table class="exposure">
      <thead><tr><th scope="col">Cohort</th><th scope="col">Players</th><th scope="col">Share</th><th scope="col">Expected</th></tr></thead>
      <tbody>${results.cohorts.map(
        (cohort) => html`<tr><th scope="row">${cohort.cohort}</th><td class="number">${formatInteger(cohort.users)}</td>
          <td class="number">${formatPercent(cohort.observedShare)}</td><td class="number">${formatPercent(cohort.expectedShare)}</td></tr>`,
      )}</tbody>
    </table>
    <p class="hint">${
      srm.checked
        ? srm.ok
          ? `The split matches the weights (sample ratio check p = ${formatPValue(srm.pValue)}).`
          : "The split does not match the weights (see the warning above)."
        : "Too few players yet to check the split against the weights."
    }</p>

    ${results.metrics.map((metric) => {
      const intervals = metric.cohorts.flatMap((cohort) => cohort.liftCi ?? []).map(Math.abs);
      const scale = Math.max(0.05, ...intervals) * 1.1;
      return html`<h2>${metric.metric.key} <span class="muted">(${metric.metric.kind} of ${metric.metric.eventName}${
        metric.metric.property ? `.${metric.metric.property}` : ""
      }${metric.metric.windowHours ? `, within ${formatNumber(metric.metric.windowHours)} h` : ""})</span></h2>
      <table class="metric" data-testid=${`metric-${metric.metric.key}`}>
        <thead><tr><th scope="col">Cohort</th><th scope="col">Players</th><th scope="col">Mean</th><th scope="col">Lift</th>
          <th scope="col">Interval (${formatPercent(1 - results.alpha)})</th><th scope="col">p-value</th>
          <th scope="col">Chance to beat control</th><th scope="col">Significant</th></tr></thead>
        <tbody>${metric.cohorts.map(
          (cohort) => html`<tr>
            <th scope="row">${cohort.cohort}${cohort.cohort === results.control ? html` <span class="muted">(control)</span>` : ""}</th>
            <td class="number">${formatInteger(cohort.users)}</td>
            <td class="number">${formatNumber(cohort.mean)}</td>
            <td class="number">${formatLift(cohort.lift)}</td>
            <td><${LiftInterval} lift=${cohort.lift} interval=${cohort.liftCi} significant=${cohort.significant} scale=${scale} />
              ${cohort.liftCi && html`<span class="visually-hidden">${formatLift(cohort.liftCi[0])} to ${formatLift(cohort.liftCi[1])}</span>`}</td>
            <td class="number">${formatPValue(cohort.pValue)}</td>
            <td class="number">${formatPercent(cohort.chanceToBeatControl)}</td>
            <td>${cohort.significant == null ? "—" : cohort.significant ? "Yes" : "No"}</td>
          </tr>`,
        )}</tbody>
      </table>`;
    })}

    ${experiment &&
    html`<h2>Phases</h2>
    <p class="hint">The weights over time; players keep the cohort they were first given.</p>
    <ol class="phases">${phasesOf(experiment.history).map(
      (phase) => html`<li><strong>${formatDate(phase.from)}</strong>: ${phase.weights}</li>`,
    )}</ol>`}
  </section>`;
}

// ---------------------------------------------------------------------------------------------
// Live events

const LIVE_QUERY = `subscription($u: String, $n: String, $e: String) {
  liveEvents(userId: $u, eventName: $n, experimentId: $e) {
    id eventId userId eventName timestamp receivedAt properties experimentId cohort } }`;
const LIVE_KEEP = 200;

function LiveEvents({ session }) {
  const [filters, setFilters] = useState({ u: "", n: "", e: "" });
  const [applied, setApplied] = useState({ u: "", n: "", e: "" });
  const [events, setEvents] = useState([]);
  const [status, setStatus] = useState("Connecting…");
  const [paused, setPaused] = useState(false);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  useEffect(() => {
    setEvents([]);
    setStatus("Connecting…");
    const variables = Object.fromEntries(Object.entries(applied).map(([name, value]) => [name, value.trim() || null]));
    return subscribe(session.key, LIVE_QUERY, variables, {
      onData: (data) => {
        if (pausedRef.current) return;
        setEvents((list) => [data.liveEvents, ...list].slice(0, LIVE_KEEP));
      },
      onError: (message) => setStatus(message),
      onConnected: () => setStatus("Listening for new events…"),
    });
  }, [applied]);
  const input = (name, label) => html`<${Field} id=${`live-${name}`} label=${label}>
    <input id=${`live-${name}`} value=${filters[name]}
      onInput=${(event) => setFilters({ ...filters, [name]: event.currentTarget.value })} />
  </${Field}>`;
  return html`<section aria-labelledby="live-heading">
    <h1 id="live-heading">Live events</h1>
    <form class="row filters" onSubmit=${(event) => {
      event.preventDefault();
      setApplied({ ...filters });
    }}>
      ${input("u", "Player id")} ${input("n", "Event name")} ${input("e", "Experiment id")}
      <button type="submit">Apply filters</button>
      <button type="button" class="secondary" aria-pressed=${paused ? "true" : "false"} onClick=${() => setPaused(!paused)}>
        ${paused ? "Resume" : "Pause"}</button>
    </form>
    <p class="muted" role="status">${paused ? "Paused: new events are not shown." : status} The newest ${LIVE_KEEP} are kept.</p>
    <table class="live" aria-live="off">
      <thead><tr><th scope="col">Received</th><th scope="col">Player</th><th scope="col">Event</th>
        <th scope="col">Experiment / cohort</th><th scope="col">Properties</th></tr></thead>
      <tbody>${events.map(
        (event) => html`<tr data-testid="live-event">
          <td>${formatDate(event.receivedAt)}</td><td class="mono">${event.userId}</td><td>${event.eventName}</td>
          <td>${event.experimentId ? `${event.experimentId} / ${event.cohort ?? "—"}` : "—"}</td>
          <td><code class="config-preview">${JSON.stringify(event.properties)}</code></td></tr>`,
      )}</tbody>
    </table>
  </section>`;
}

// ---------------------------------------------------------------------------------------------
// Audit log

const AUDIT_QUERY = `query($after: String, $type: String) {
  auditLog(first: 50, after: $after, entityType: $type) {
    nodes { id at actor action entityType entityId before after } pageInfo { hasNextPage endCursor } } }`;

function AuditLog({ session }) {
  const [type, setType] = useState("");
  const [pages, setPages] = useState([]);
  const { data, error, loading } = useQuery(session, AUDIT_QUERY, { type: type || null }, [type]);
  useEffect(() => setPages([]), [data]);
  if (loading && !data) return html`<${Loading} />`;
  const entries = data ? [...data.auditLog.nodes, ...pages.flatMap((page) => page.nodes)] : [];
  const lastInfo = pages.length ? pages[pages.length - 1].pageInfo : data?.auditLog.pageInfo;
  const more = async () => {
    const next = await session.call(AUDIT_QUERY, { type: type || null, after: lastInfo.endCursor });
    setPages([...pages, next.auditLog]);
  };
  return html`<section aria-labelledby="audit-heading">
    <h1 id="audit-heading">Audit log</h1>
    <${Field} id="audit-type" label="Show">
      <select id="audit-type" value=${type} onChange=${(event) => setType(event.currentTarget.value)}>
        <option value="">Every change</option><option value="experiment">Experiments</option><option value="config">Configs</option>
      </select>
    </${Field}>
    <${Problem} error=${error} />
    <table class="audit">
      <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Of</th>
        <th scope="col">Before</th><th scope="col">After</th></tr></thead>
      <tbody>${entries.map(
        (entry) => html`<tr>
          <td>${formatDate(entry.at)}</td><td>${entry.actor}</td><td>${entry.action}</td>
          <td class="mono">${entry.entityType} ${entry.entityId}</td>
          <td><code class="config-preview">${entry.before == null ? "—" : JSON.stringify(entry.before)}</code></td>
          <td><code class="config-preview">${entry.after == null ? "—" : JSON.stringify(entry.after)}</code></td></tr>`,
      )}</tbody>
    </table>
    ${lastInfo?.hasNextPage && html`<button type="button" class="secondary" onClick=${more}>Older entries</button>`}
  </section>`;
}

// ---------------------------------------------------------------------------------------------
// The shell

function App() {
  const [key, setKey] = useState(() => sessionStorage.getItem(KEY_STORAGE));
  const [notice, setNotice] = useState(null);
  const route = useRoute();
  const signOut = (message = null) => {
    sessionStorage.removeItem(KEY_STORAGE);
    setNotice(message);
    setKey(null);
  };
  if (!key) {
    return html`<${SignIn} notice=${notice} onSignedIn=${(entered) => {
      sessionStorage.setItem(KEY_STORAGE, entered);
      setNotice(null);
      setKey(entered);
    }} />`;
  }
  const session = {
    key,
    call: async (query, variables) => {
      try {
        return await graphql(key, query, variables);
      } catch (failure) {
        if (failure.code === "UNAUTHENTICATED") signOut("The server no longer accepts that key: sign in again.");
        throw failure;
      }
    },
  };
  const [page, id, sub] = route;
  let content;
  if (page === "experiments") content = html`<${ExperimentList} session=${session} />`;
  else if (page === "new") content = html`<${NewExperiment} session=${session} />`;
  else if (page === "experiment" && id && sub === "results") content = html`<${Results} key=${id} session=${session} id=${id} />`;
  else if (page === "experiment" && id) content = html`<${ExperimentPage} key=${id} session=${session} id=${id} />`;
  else if (page === "global") content = html`<${GlobalConfig} session=${session} />`;
  else if (page === "live") content = html`<${LiveEvents} session=${session} />`;
  else if (page === "audit") content = html`<${AuditLog} session=${session} />`;
  else content = html`<p role="alert">No such page. <a href=${link()}>Experiments</a></p>`;
  const current = (name) => (page === name || (name === "experiments" && (page === "experiment" || page === "new")) ? "page" : undefined);
  return html`<div class="shell">
    <a class="skip-link" href="#content">Skip to the page</a>
    <header>
      <span class="brand">OCTP console</span>
      <nav aria-label="Console">
        <a href=${link("experiments")} aria-current=${current("experiments")}>Experiments</a>
        <a href=${link("global")} aria-current=${current("global")}>Global config</a>
        <a href=${link("live")} aria-current=${current("live")}>Live events</a>
        <a href=${link("audit")} aria-current=${current("audit")}>Audit log</a>
      </nav>
      <button type="button" class="secondary" onClick=${() => signOut("Signed out.")}>Sign out</button>
    </header>
    <main id="content" tabindex="-1">${content}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
