// The cloud panel: where a trained model is saved (project, model name, notes) and what the page's model
// is in the cloud. Saving and loading themselves are js/cloud-save.js, loaded on first use. What is saved
// is listed by js/library.js ("Your library"), imported here once someone signs in.
import {$, el, showMessage} from "./dom.js";
import {Problem, session} from "./session.js";
import {state} from "./state.js";

// Between this panel and the library: "saved" {projectId, modelId, version} after a save is recorded;
// "changed" {kind: "project"|"model", id, action: "rename"|"delete"} after the library changed a record.
export const cloud = new EventTarget();
// This page's model in the cloud: a new save adds a version to it.
export const saved = {projectId: null, modelId: null, name: null};

export const say = (text, problem = false) => showMessage($("cloud-message"), text, problem, "status");

const heavy = () => import("./cloud-save.js");
/** Load a ready version into the workbench with its run and dataset (js/cloud-save.js). */
export const loadVersion = async (model, version) => (await heavy()).loadVersion(model, version);
/** Open a saved dataset record in the workbench (js/cloud-save.js). */
export const openDatasetRecord = async (d) => (await heavy()).openDatasetRecord(d);

/** The workbench's top in view with the keyboard focus there (after opening something from the library). */
export function showWorkbench() {
  const top = $("workbench-title");
  top.scrollIntoView({block: "start"});
  top.focus({preventScroll: true});
}

/** The project choice, fresh from the API (after a save, or a rename or delete in the library). */
export async function listProjects(selected = $("cloud-project").value) {
  const {items} = await session.request("GET", "/projects?limit=100");
  const select = $("cloud-project");
  select.replaceChildren(el("option", {value: "", textContent: "New project…"}),
    ...items.map((p) => el("option", {value: p.id, textContent: p.name, selected: p.id === selected})));
  $("cloud-new-project").hidden = select.value !== "";
}

let working = false; // a save or load is under way: leaving the page would cut it off
window.addEventListener("beforeunload", (event) => {
  if (!working) return;
  event.preventDefault();
  event.returnValue = "";
});

async function run(work) {
  const controls = $("cloud-panel").querySelectorAll("button, input, select");
  controls.forEach((c) => { c.disabled = true; });
  say("");
  working = true;
  try {
    await work();
  } catch (err) {
    say(err instanceof Problem ? err.message : `That did not work: ${err.message}`, true);
  } finally {
    working = false;
    controls.forEach((c) => { c.disabled = false; });
    $("cloud-save").disabled = !state.model?.model;
  }
}

export function mountCloudPanel(panel) {
  panel.replaceChildren(
    el("h3", {textContent: "Cloud"}),
    el("p", {id: "cloud-signed-out"}, "Your work is kept in this browser. To save models, datasets and runs to " +
      "the cloud, with versions and notes, ", el("a", {href: "#account", textContent: "sign in"}),
      " and go PRO or apply a promo code."),
    el("div", {id: "cloud-signed-in", hidden: true},
      el("label", {}, "Project ", el("select", {id: "cloud-project", onchange: () => {
        $("cloud-new-project").hidden = $("cloud-project").value !== ""; }})),
      el("label", {}, " New project name ", el("input", {id: "cloud-new-project", maxLength: 100, placeholder: "My project"})),
      el("label", {}, " Model name ", el("input", {id: "cloud-model-name", maxLength: 100, placeholder: "model"})),
      el("label", {}, " Notes on this version (optional) ", el("input", {id: "cloud-notes", maxLength: 500,
        placeholder: "what changed, what you tried"})),
      el("div", {className: "cloud-actions"}, el("button", {id: "cloud-save", type: "button", className: "primary",
        textContent: "Save to cloud", disabled: true, onclick: () => run(async () => (await heavy()).save())})),
      el("ol", {id: "cloud-steps"}),
      el("p", {className: "hint"}, "Saved models, datasets and training runs are listed in ",
        el("a", {href: "#library", textContent: "Your library"}), ".")),
    el("p", {id: "cloud-message", role: "status"}));
  let listedFor = null; // the uid whose projects the choice lists: a new /me of the same person (a plan change) keeps it
  session.onChange((me) => {
    $("cloud-signed-in").hidden = !me;
    $("cloud-signed-out").hidden = Boolean(me);
    if ((me?.uid ?? null) === listedFor) return;
    listedFor = me?.uid ?? null;
    if (!me) {
      Object.assign(saved, {projectId: null, modelId: null, name: null});
      return;
    }
    run(() => listProjects(saved.projectId || ""));
    import("./library.js"); // the lists: loaded only for a signed-in person
  });
  cloud.addEventListener("changed", ({detail}) => {
    if (detail.action === "delete" && (detail.id === saved.projectId || detail.id === saved.modelId)) {
      Object.assign(saved, {projectId: null, modelId: null, name: null}); // the next save makes a new model
    }
    if (detail.kind === "project") {
      listProjects(saved.projectId || "").catch((err) => say(`The project list did not refresh: ${err.message}`, true));
    }
  });
  state.on("model", (m) => { $("cloud-save").disabled = !m?.model; });
}

const mount = $("cloud-panel");
if (mount && !mount.childElementCount) mountCloudPanel(mount);
