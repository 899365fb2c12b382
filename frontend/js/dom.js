// The DOM helpers every panel of the lab uses ($ by id, el() to build a node, showMessage()) and the
// formats several of them show (sizes, dates). Loaded on the first page load (lab.js, the workbench
// and the data panel import it), so it stays tiny.
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

/**
 * Shows `text` in a message box, marked as a problem (class .problem) when it is one. Given `calm`,
 * the box's role follows too: "alert" for a problem, else `calm` ("status", or null for no role).
 */
export function showMessage(box, text, problem = false, calm = undefined) {
  box.textContent = text;
  box.classList.toggle("problem", problem && text !== "");
  if (calm === undefined) return;
  if (problem) box.setAttribute("role", "alert");
  else if (calm) box.setAttribute("role", calm);
  else box.removeAttribute("role");
}

/** A size in bytes for people: "512 B", "1.5 KiB", "20 MiB". */
export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${Number(n.toFixed(1))} ${units[i]}`;
}

const DATE_TIME = new Intl.DateTimeFormat("en-US", {dateStyle: "medium", timeStyle: "short"});
/** An ISO time as a date and time: "Nov 22, 2026, 5:18 AM". */
export const dateTime = (iso) => DATE_TIME.format(new Date(iso));
