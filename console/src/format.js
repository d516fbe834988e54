// Numbers and dates for people: the browser's locale, thousands separators, percentages.
const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
const signedPercent = new Intl.NumberFormat(undefined, {
  style: "percent",
  maximumFractionDigits: 1,
  signDisplay: "exceptZero",
});
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

const dash = "—";

export const formatInteger = (value) => (value == null ? dash : integer.format(value));
export const formatNumber = (value) => (value == null ? dash : decimal.format(value));
export const formatPercent = (value) => (value == null ? dash : percent.format(value));
export const formatLift = (value) => (value == null ? dash : signedPercent.format(value));
export const formatDate = (value) => (value ? dateTime.format(new Date(value)) : dash);

/** p-values: small ones in scientific notation rather than as 0. */
export function formatPValue(value) {
  if (value == null) return dash;
  if (value < 0.0001) return value.toExponential(1);
  return value.toFixed(4);
}

/** A size in bytes, or in KiB with one decimal from 1 KiB on. */
export const formatSize = (bytes) =>
  bytes < 1024 ? `${integer.format(bytes)} bytes` : `${decimal.format(Math.round((bytes / 1024) * 10) / 10)} KiB`;
