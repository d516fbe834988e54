// The server's input rules (docs/api.md §4) checked as the designer types, so a mistake is shown
// beside its field before anything is sent. The server checks them again.
export const NAME_PATTERN = /^[A-Za-z0-9_.:-]+$/;
export const MAX_NAME_CHARS = 128;
export const MAX_COHORTS = 20;
export const MAX_CONFIG_BYTES = 64 * 1024;

/** Why an id or cohort name is refused, or null. */
export function nameProblem(name, what) {
  const length = [...name].length;
  if (length === 0) return `${what} is required.`;
  if (length > MAX_NAME_CHARS) return `${what} is ${length} characters; at most ${MAX_NAME_CHARS}.`;
  if (!NAME_PATTERN.test(name)) return `${what} may hold only letters, digits and _ . : -`;
  return null;
}

/**
 * Checks cohort rows [{name, weight}] (weight as typed, a string). Returns {rows: [problem|null…],
 * overall: problem|null, weights: {name: number}}.
 */
export function checkCohorts(cohorts) {
  const seen = new Set();
  const rows = cohorts.map(({ name, weight }) => {
    const problem = nameProblem(name.trim(), "The cohort name");
    if (problem) return problem;
    if (seen.has(name.trim())) return `The cohort ${name.trim()} is listed twice.`;
    seen.add(name.trim());
    const number = Number(weight);
    if (weight === "" || !Number.isFinite(number)) return "The weight must be a number.";
    if (number < 0) return "The weight cannot be negative.";
    return null;
  });
  let overall = null;
  const sum = cohorts.reduce((total, { weight }) => total + (Number(weight) || 0), 0);
  if (cohorts.length === 0) overall = "An experiment needs at least one cohort.";
  else if (cohorts.length > MAX_COHORTS) overall = `At most ${MAX_COHORTS} cohorts.`;
  else if (!rows.some(Boolean) && !(sum > 0)) overall = "At least one weight must be above 0.";
  const weights = Object.fromEntries(cohorts.map(({ name, weight }) => [name.trim(), Number(weight)]));
  return { rows, overall, weights, sum };
}

/** Whether two weight maps give different splits (what starts a new phase of the results). */
export function weightsChanged(before, after) {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].some((name) => (before[name] ?? null) !== (after[name] ?? null));
}

/** A config as typed: {value, problem, bytes}; a problem when it is not a JSON object or too big. */
export function checkConfig(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { value: null, problem: `Not valid JSON: ${error.message}`, bytes: 0 };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { value: null, problem: "A config is a JSON object: { … }.", bytes: 0 };
  }
  const bytes = new TextEncoder().encode(JSON.stringify(value)).length;
  if (bytes > MAX_CONFIG_BYTES) {
    return { value, problem: `The config takes ${bytes} bytes; at most ${MAX_CONFIG_BYTES}.`, bytes };
  }
  return { value, problem: null, bytes };
}
