// A shared model's page (/m/<deployment id>, or /m/?id=<deployment id>: the gateway and the URL map serve
// this page for every /m/<id>, with a CSP that lets any site frame it): the model's
// name, description and inputs as a form; predictions computed in the visitor's browser with TF.js
// from the model's files, fetched through the short-lived signed URLs GET /public/deployments/{id}
// returns (no key, no sign-in, nothing sent to a server but that request).
import {$, el, showMessage} from "./dom.js";
import {number, percent} from "./format.js";

const ID = /^[A-Za-z0-9]{1,64}$/;

/** The deployment id from ?id= or from the path /m/<id>; null when there is none. */
export function shareId(loc = location) {
  const fromQuery = new URLSearchParams(loc.search).get("id");
  const fromPath = loc.pathname.match(/^\/m\/([^/]+)\/?$/)?.[1];
  const id = fromQuery || (fromPath && fromPath !== "index.html" ? decodeURIComponent(fromPath) : null);
  return id && ID.test(id) ? id : null;
}

function inputFor(feature, i) {
  const control = feature.type === "categorical"
    ? el("select", {id: `share-${i}`, name: feature.name},
      ...feature.values.map((v) => el("option", {value: v, textContent: v})), el("option", {value: "", textContent: "(missing)"}))
    : el("input", {id: `share-${i}`, name: feature.name, type: "text", inputMode: "decimal", autocomplete: "off",
      placeholder: "blank: average"});
  return el("div", {className: "field"}, el("label", {htmlFor: control.id, textContent: feature.name}), control);
}

function render(output, result) {
  output.classList.remove("problem");
  if ("value" in result) {
    output.dataset.value = String(result.value);
    output.replaceChildren(el("strong", {textContent: `Prediction: ${number(result.value)}`}));
    return;
  }
  output.dataset.label = String(result.label);
  output.dataset.probabilities = JSON.stringify(result.probabilities.map((p) => p.p));
  output.replaceChildren(el("strong", {textContent: `Prediction: ${result.label}`}),
    el("ul", {className: "probabilities"}, ...result.probabilities.map(({label, p}) => el("li", {textContent: `${label}: ${percent(p)}`}))));
}

async function main() {
  const section = $("share");
  const say = (text, problem = false) => showMessage($("share-message"), text, problem);
  const id = shareId();
  const done = () => section.setAttribute("aria-busy", "false");
  if (!id) {
    $("share-title").textContent = "No model here";
    say("This link has no model id. Ask whoever shared it for the full link.", true);
    done();
    return;
  }
  let view;
  try {
    const res = await fetch(`/public/deployments/${encodeURIComponent(id)}`, {credentials: "omit"});
    view = await res.json();
    if (!res.ok) throw new Error(view.detail || `HTTP ${res.status}`);
  } catch (err) {
    $("share-title").textContent = "This model is not shared";
    say(err.message, true);
    done();
    return;
  }
  document.title = `${view.name} · ML Lab`;
  $("share-title").textContent = view.name;
  $("share-description").textContent = view.description;
  $("share-legend").textContent = `Predict ${view.target}`;
  const inputs = view.features.map(inputFor);
  $("share-inputs").replaceChildren(...inputs);
  const embed = `<iframe src="${location.origin}/m/${id}" title="${view.name.replaceAll('"', "&quot;")}" ` +
    'width="480" height="560" style="border:0"></iframe>';
  $("share-embed-code").textContent = embed;
  $("share-body").hidden = false;
  say("Loading the model…");
  let model, pre;
  try {
    // The model lives in the lab's worker (js/trainer.js), as in the lab: the page only holds a handle.
    const [{loadFromUrls}, trainer] = await Promise.all([import("./model.js"), import("./trainer.js")]);
    model = await loadFromUrls(view.model_json_url, view.weights_url);
    pre = model.getUserDefinedMetadata()?.preprocessor;
    if (!pre) throw new Error("the model has no preprocessing metadata");
    const output = $("share-prediction");
    $("share-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const row = Object.fromEntries(inputs.map((box) => {
        const control = box.querySelector("input, select");
        return [control.name, control.value];
      }));
      try {
        render(output, await trainer.predict(model, pre, row));
      } catch (err) {
        output.classList.add("problem");
        output.replaceChildren(`The prediction failed: ${err.message}`);
      }
    });
    say("");
    section.dataset.ready = "true";
  } catch (err) {
    say(`The model could not be loaded: ${err.message}`, true);
  } finally {
    done();
  }
}

if ($("share")) main();
