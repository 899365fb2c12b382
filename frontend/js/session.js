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

export async function problemDetail(res) {
  const body = await res.json().catch(() => ({}));
  return body.detail || body.title || `The request failed (HTTP ${res.status}).`;
}
