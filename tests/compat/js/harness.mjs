// What every client script shares: the gateway's address and key (OPENAI_BASE_URL,
// OPENAI_API_KEY, as in .local/dev.env), the models each case calls (FORGE_COMPAT_MODELS, set
// by tests/compat/conftest.py; the demo models otherwise), and a runner that plays each case
// in turn and prints {case: result} as one JSON line. A case returns what it observed; a throw
// is recorded as {error: {...}} with the SDK's error class, status and code, so the Python test
// that asserts on it can say what went wrong.

export const baseURL = process.env.OPENAI_BASE_URL;
export const apiKey = process.env.OPENAI_API_KEY;
export const models = JSON.parse(
  process.env.FORGE_COMPAT_MODELS ??
    '{"chat": "demo-official", "embedding": "demo-embedding", "demo_embedding": "demo-embedding", "unknown": "no-such-model"}',
);

const CASE_TIMEOUT_MS = 20_000;

export function describeError(error, classes = {}) {
  const errorClass =
    Object.entries(classes).find(([, type]) => error instanceof type)?.[0] ??
    error?.constructor?.name ??
    typeof error;
  return {
    class: errorClass,
    message: String(error?.message ?? error).slice(0, 500),
    status: error?.status ?? error?.statusCode ?? null,
    url: error?.url ?? null,
    code: error?.code ?? null,
    param: error?.param ?? null,
  };
}

export async function runCases(cases, errorClasses = {}) {
  const results = {};
  for (const [name, play] of Object.entries(cases)) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
    });
    try {
      results[name] = await Promise.race([play(), timeout]);
    } catch (error) {
      results[name] = { error: describeError(error, errorClasses) };
    } finally {
      clearTimeout(timer);
    }
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
}
