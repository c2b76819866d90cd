// Amounts are integer micro-units of a bucket's currency: formatted with string arithmetic,
// never floats (the API's decimals are exact, so is what the console shows).
const SYMBOL = { USD: "$", CNY: "¥" };
export const CURRENCY = { credit: "USD", rmb: "CNY" };

export function currencyOf(bucket) {
  return CURRENCY[bucket] || "";
}

/** 1500000 USD -> "$1.50"; 123 -> "$0.000123" (at least two decimals, at most six). */
export function money(micros, currency) {
  if (micros === null || micros === undefined) return "—";
  const value = BigInt(micros);
  const sign = value < 0n ? "-" : "";
  const abs = value < 0n ? -value : value;
  const whole = (abs / 1000000n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  let frac = (abs % 1000000n).toString().padStart(6, "0").replace(/0+$/, "");
  frac = frac.padEnd(2, "0");
  if (SYMBOL[currency]) return `${sign}${SYMBOL[currency]}${whole}.${frac}`;
  return `${sign}${whole}.${frac}${currency ? " " + currency : ""}`;
}

/** A decimal string of the API ("1.500000") in micro-units, exactly. */
export function micros(decimal) {
  if (decimal === null || decimal === undefined || decimal === "") return null;
  const [whole, frac = ""] = String(decimal).replace("-", "").split(".");
  const value = BigInt(whole || "0") * 1000000n + BigInt((frac + "000000").slice(0, 6));
  return String(decimal).startsWith("-") ? -value : value;
}

/** ceil(tokens x price per 1M / 1e6): the charge of one token class, as the gateway rounds. */
export function classCharge(tokens, pricePerMillion) {
  const product = BigInt(tokens) * BigInt(pricePerMillion);
  return (product + 999999n) / 1000000n;
}
