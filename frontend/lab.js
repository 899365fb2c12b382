// The lab shell. Sign-in, refresh and the account screen live in js/account.js
// (docs/security.md): the access token stays in that module's memory; the refresh cookie (__Host-rt, HttpOnly)
// is the browser's business.
import {Problem, problemOf, session} from "./js/session.js";
import {accessToken, refresh, showAccount, startAccount} from "./js/account.js";
import {$, bytes, showMessage} from "./js/dom.js";

let me = null; // GET /me while signed in: who, subscription, usage and the session's CSRF token
const count = new Intl.NumberFormat("en-US"); // before the first await: the listener below may use it

// The billing section follows the session: filled before it is shown, emptied on sign-out. Added
// before the first await, so it runs before the other modules' listeners: they may call request()
// at once, which needs `me`.
session.onChange((account) => {
  me = account;
  if (account) {
    showSubscription(account.subscription);
    showUsage(account.usage, account.predictions);
  } else {
    say("");
  }
  $("billing").hidden = account === null;
  // The first screen: signed out, the pitch and the plans beside the sign-in; signed in, the account and billing.
  $("intro").hidden = account !== null;
  $("nav-library").hidden = account === null;
  $("nav-deployments").hidden = account === null;
  $("nav-account").textContent = account ? "Account" : "Sign in";
});
// The sign-in links go to the form and put the cursor in it (a signed-in person gets the account card).
for (const id of ["nav-account", "hero-pro"]) {
  $(id).addEventListener("click", (event) => {
    event.preventDefault();
    $("account").scrollIntoView({block: "start"});
    (me ? $("account-title") : $("email")).focus({preventScroll: true});
  });
}
// A save to the cloud uses storage and an upload: the usage under Billing follows at once. (Imported
// here, not statically: its listeners must come after the one above, which sets `me` for request().)
import("./js/cloud.js").then(({cloud}) => cloud.addEventListener("saved", () => showAccount()));
const config = await fetch("/config.json").then((r) => r.json());
const api = (path) => `${config.api_base}${path}`;
startAccount(api, {afterSignIn: () => finishCheckout()}); // a return from PayPal that waited for the sign-in

// --- Billing (docs/architecture.md, entitlements): the plan from /me, PayPal checkout and cancel, promo codes -------

const SUBSCRIPTION_ID = /^I-[A-Z0-9]{6,40}$/;
const DATE = new Intl.DateTimeFormat("en-US", {month: "short", day: "numeric", year: "numeric"});
const day = (iso) => DATE.format(new Date(iso));

const say = (text, problem = false) => showMessage($("billing-message"), text, problem);
const sameDay = (a, b) => (a && b) ? day(a) === day(b) : a === b;

// The PRO plan's price once /billing/plans answered ("$15.00"), and the last /me subscription shown.
let proPrice = null;
let shownSub = null;

function planText(sub) {
  const until = sub.pro_until ? day(sub.pro_until) : "";
  switch (sub.status) {
    case "active":
      // A subscription that starts when the PRO already held ends: approved, nothing charged yet.
      if (sub.first_charge_time) return `PRO — subscribed, first charge ${day(sub.first_charge_time)}`;
      if (sub.next_billing_time) return `PRO — renews ${day(sub.next_billing_time)}`;
      return new Date(sub.pro_until).getUTCFullYear() >= 9999 ? "PRO (no end date)" : `PRO until ${until}`;
    case "past_due": return `PRO — payment past due (access until ${until})`;
    case "trial": return `PRO trial until ${day(sub.trial_until || sub.pro_until)}`;
    case "canceled": return sub.plan === "pro" ? `PRO until ${until} (canceled)` : "Free plan (subscription ended)";
    default: return sub.plan === "pro" ? `PRO until ${until}` : "Free plan";
  }
}

// Before anyone goes to PayPal: when the first charge of a new subscription would be. While PRO is
// held already (a paid-through date, a trial), the subscription starts when it ends.
function showFirstCharge(sub, offered) {
  const note = $("first-charge");
  note.dataset.firstCharge = sub.first_charge_time ?? "";
  note.hidden = !offered || proPrice === null;
  if (note.hidden) return;
  if (sub.first_charge_time) {
    $("first-charge-date").textContent = `Your first charge of ${proPrice} will be on ${day(sub.first_charge_time)}`;
    $("first-charge-detail").textContent =
      `Nothing is charged today and your PRO continues until then; after that, ${proPrice} a month until you cancel.`;
  } else {
    $("first-charge-date").textContent = `Your first charge of ${proPrice} will be today`;
    $("first-charge-detail").textContent = `Then ${proPrice} a month until you cancel.`;
  }
}

function showSubscription(sub) {
  shownSub = sub;
  const status = $("plan-status");
  status.textContent = planText(sub);
  status.dataset.status = sub.status;
  status.dataset.plan = sub.plan;
  const pro = sub.status === "active" || sub.status === "past_due";
  // A renewing PayPal subscription has a next billing time (or is past due); a comp or grant has none.
  const paying = sub.status === "past_due" || (sub.status === "active" && sub.next_billing_time !== null);
  $("subscribe").hidden = pro;
  showFirstCharge(sub, !pro);
  $("cancel-subscription").hidden = !paying;
  $("manage-paypal").hidden = !sub.manage_url;
  if (sub.manage_url) $("manage-paypal").href = sub.manage_url;
  const paid = sub.last_payment;
  $("last-payment").hidden = !paid;
  if (paid) {
    const amount = paid.value && paid.currency
      ? new Intl.NumberFormat("en-US", {style: "currency", currency: paid.currency}).format(Number(paid.value)) : "";
    $("last-payment").textContent = `Last payment: ${amount ? `${amount} on ` : ""}${day(paid.time)}`;
  }
  // Past due: PayPal could not take the last payment. Access continues for the grace period while
  // PayPal retries; fixing the payment method happens at PayPal.
  $("past-due").hidden = !sub.past_due;
  $("past-due").textContent = sub.past_due
    ? `Your last payment did not go through. PRO continues until ${day(sub.pro_until)} while PayPal retries; ` +
      "update your payment method at PayPal to keep it." : "";
}

// Storage and uploads, and this month's predictions by the user's deployments (metered per month, UTC).
function showUsage(usage, predictions) {
  const lines = usage.storage_limit_bytes
    ? [`Storage: ${bytes(usage.storage_bytes)} of ${bytes(usage.storage_limit_bytes)}`,
       `Uploads today: ${usage.uploads_today} of ${usage.uploads_limit}`]
    : [`Storage: ${bytes(usage.storage_bytes)} (cloud saves come with PRO)`];
  if (predictions?.limit) {
    lines.push(`Predictions this month: ${count.format(predictions.predictions)} of ${count.format(predictions.limit)}`);
  } else if (predictions?.predictions) { // counted before PRO ended: shown, with no quota left
    lines.push(`Predictions this month: ${count.format(predictions.predictions)} (deployments come with PRO)`);
  }
  $("usage").replaceChildren(...lines.map((text) => Object.assign(document.createElement("li"), {textContent: text})));
}

async function showPlans() {
  try {
    const res = await fetch(api("/billing/plans"));
    if (!res.ok) throw new Problem((await problemOf(res)).detail);
    const pro = (await res.json()).plans.find((p) => p.id === "pro");
    const price = new Intl.NumberFormat("en-US", {style: "currency", currency: pro.price.currency});
    proPrice = price.format(Number(pro.price.value));
    if (shownSub) showSubscription(shownSub);
    $("plan-price").textContent = `${pro.name}: ${price.format(Number(pro.price.value))}/${pro.interval} — ` +
      `${bytes(pro.limits.storage_bytes)} of cloud saves, ${pro.limits.uploads_per_day} uploads a day, ` +
      `${pro.limits.deployments} deployments and ${count.format(pro.limits.predictions_per_month)} predictions a month.`;
    // The first screen's PRO card says what the API says (its static text is the same plan, for the first paint).
    $("hero-price").textContent = price.format(Number(pro.price.value)).replace(/\.00$/, "");
    $("hero-limits").textContent = `${bytes(pro.limits.storage_bytes)} of cloud storage, ${pro.limits.uploads_per_day} uploads a day`;
  } catch (err) {
    $("plan-price").textContent = `Prices are not available right now: ${err.message}`;
  }
}

// An API call: bearer token, the session's CSRF token, a JSON body.
async function request(method, path, body) {
  const headers = {Authorization: `Bearer ${accessToken}`, "X-CSRF-Token": me.csrf};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const send = () => fetch(api(path), {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let res = await send();
  if (res.status === 401 && await refresh()) { headers.Authorization = `Bearer ${accessToken}`; res = await send(); }
  if (!res.ok) throw new Problem((await problemOf(res)).detail);
  return res.status === 204 ? null : res.json();
}
session.request = request;
const post = (path, body = {}) => request("POST", path, body);

// Runs one billing request with every billing control disabled, and shows what went wrong.
const LEAVING = Symbol("the page is navigating away");
async function billingAction(work) {
  const controls = $("billing").querySelectorAll("button, input");
  controls.forEach((c) => { c.disabled = true; });
  say("");
  let outcome;
  try {
    outcome = await work();
  } catch (err) {
    say(err instanceof Problem ? err.message : `The request did not go through (${err.message}).`, true);
  }
  if (outcome !== LEAVING) controls.forEach((c) => { c.disabled = false; });
}

async function subscriptionChanged(sub) {
  showSubscription(sub);
  await showAccount(); // the usage limits follow the plan
}

$("subscribe").addEventListener("click", () => billingAction(async () => {
  const checkout = await post("/billing/paypal/subscribe");
  const shown = $("first-charge").dataset.firstCharge ?? "";
  const answered = checkout.first_charge_time ?? "";
  if (!sameDay(shown, answered)) {
    // The plan changed since the page showed the date (a trial applied elsewhere): show the date
    // the checkout really has, and go to PayPal only when asked again.
    showFirstCharge({...shownSub, first_charge_time: checkout.first_charge_time}, true);
    say("The date of your first charge has changed; check it above, then press Subscribe with PayPal again.");
    return;
  }
  say("Opening PayPal…");
  location.assign(checkout.approve_url);
  return LEAVING;
}));

$("cancel-subscription").addEventListener("click", () => {
  if (!confirm("Cancel your PRO subscription? You keep PRO until the end of the period you paid for.")) return;
  billingAction(async () => {
    await subscriptionChanged(await post("/billing/cancel"));
    say("Your subscription is canceled; PayPal will not charge you again.");
  });
});

$("promo-form").addEventListener("submit", (event) => {
  event.preventDefault();
  billingAction(async () => {
    const applied = await post("/promo/apply", {code: $("promo-code").value.trim()});
    await subscriptionChanged(applied.subscription);
    $("promo-code").value = "";
    say(applied.kind === "trial" ? `Code applied: ${applied.days}-day PRO trial`
      : `Code applied: PRO ${applied.days ? `for ${applied.days} days` : "for good"}`);
  });
});

// PayPal sends the buyer back to /?billing=return&subscription_id=I-... or /?billing=cancel. The
// server re-reads the subscription from PayPal (it never trusts the query string). Signed out, the
// query string waits for the sign-in.
async function finishCheckout() {
  const params = new URLSearchParams(location.search);
  const outcome = params.get("billing");
  if (!outcome || me === null) return;
  history.replaceState(null, "", location.pathname + location.hash);
  if (outcome === "cancel") {
    say("Checkout canceled; you were not charged.");
  } else if (outcome === "return") {
    const id = params.get("subscription_id") ?? "";
    await billingAction(async () => {
      const sub = await post("/billing/sync", SUBSCRIPTION_ID.test(id) ? {subscription_id: id} : {});
      await subscriptionChanged(sub);
      say(sub.status !== "active" ? `PayPal has not confirmed the subscription yet. Your plan: ${planText(sub)}.`
        : sub.first_charge_time ? `Thanks — you are subscribed. Your first charge will be on ${day(sub.first_charge_time)}.`
          : "Thanks — PRO is active.");
    });
  }
}

async function showStatus() {
  if (!config.health_url) return; // the local stack's gateway only
  $("status").hidden = false;
  const summary = $("status-summary");
  try {
    const body = await fetch(config.health_url).then((r) => r.json());
    summary.textContent = body.status === "ok" ? "Everything is running." : "Some parts are down.";
    $("status-list").replaceChildren(...body.components.map((c) => {
      const li = document.createElement("li");
      li.className = c.state;
      li.textContent = `${c.name} (${c.kind}) ${c.state}`;
      return li;
    }));
  } catch (err) {
    summary.textContent = `The backend is not reachable: ${err.message}`;
  }
}

showPlans();
showStatus();
await refresh();
await showAccount();
if (me !== null && location.hash === "#billing") $("billing").scrollIntoView();
finishCheckout();
