// The public JSON API, called with the key the user signed in with. The key lives in
// sessionStorage only: it is gone when the tab closes, and sign-out forgets it at once.
const STORAGE = "forge.key";
// /console/ -> the API root beside it (keeps API Gateway's stage prefix, e.g. /dev/).
export const API_ROOT = new URL("../", document.baseURI).pathname.replace(/\/$/, "");

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.details = error;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(STORAGE); },
  signIn(key) { sessionStorage.setItem(STORAGE, key); },
  signOut() { sessionStorage.removeItem(STORAGE); },
};

function headersFor(key, extra = {}) {
  return { Authorization: `Bearer ${key || session.key}`, ...extra };
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** One JSON call; an error answer (OpenAI's shape) becomes an ApiError. */
export async function api(path, { method = "GET", body, key, headers } = {}) {
  const init = { method, headers: headersFor(key, headers) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(API_ROOT + path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A streamed chat completion: calls onDelta(text) per content chunk; resolves to
 * {requestId, receipt, headers} once the stream ends (the receipt is its SSE comment). */
export async function streamChat(body, { key, headers = {}, onDelta }) {
  const response = await fetch(API_ROOT + "/v1/chat/completions", {
    method: "POST",
    headers: headersFor(key, { ...headers, "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { data = null; }
    throw new ApiError(response.status, data);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let receipt = null;
  let failure = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line.startsWith(": receipt ")) receipt = JSON.parse(line.slice(10));
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const event = JSON.parse(line.slice(6));
      if (event.error) failure = new ApiError(200, event);
      for (const choice of event.choices || []) {
        if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
      }
      if (event.receipt) receipt = event.receipt;
    }
  }
  if (failure) throw failure;
  return { requestId: response.headers.get("x-request-id"), receipt, headers: response.headers };
}
