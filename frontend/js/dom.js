// The DOM helpers every panel of the lab uses: $ by id and el() to build a node. Loaded on the first
// page load (lab.js, the workbench and the data panel import it), so it stays tiny.
export const $ = (id) => document.getElementById(id);

/**
 * A <tag> with `props` set as properties (role and aria-* as attributes, which have no property of
 * that name) and the children that are not null, undefined, false or "" (so `cond && node` works).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "role" || k.startsWith("aria-")) node.setAttribute(k, v); else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
  return node;
}
