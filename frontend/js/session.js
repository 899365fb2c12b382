// The signed-in session, shared by the lab's modules. js/account.js owns sign-in and refresh; the other
// modules call `request` and listen with `onChange`. The access token never leaves memory.
export class Problem extends Error {} // an application/problem+json answer: `message` is its `detail`

const listeners = new Set();
export const session = {
  me: null, // GET /me while signed in (uid, email, subscription, usage, csrf)
  request: null, // (method, path, body?) => parsed JSON (or null for 204); throws Problem; set by lab.js
  onChange(listener) { listeners.add(listener); if (this.me) listener(this.me); },
  changed(me) { this.me = me; listeners.forEach((l) => l(me)); },
};

// What a refused request says, as {status, slug, detail}: the problem's `detail`, or its field errors
// when the detail only points at them (the browser's own checks catch most of those first).
export async function problemOf(res) {
  const body = await res.json().catch(() => ({}));
  let detail = body.detail || body.title || `The request failed (HTTP ${res.status}).`;
  if (Array.isArray(body.errors) && body.errors.length && /`errors`/.test(detail)) {
    detail = body.errors.map((e) => `${String(e.field).replace(/_/g, " ")}: ${e.message}`).join("; ");
    detail = `${detail[0].toUpperCase()}${detail.slice(1)}.`;
  }
  return {status: res.status, slug: String(body.type || "").split(":").pop(), detail};
}
