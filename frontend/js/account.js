// The account (docs/security.md): "Continue with Google", email + password (register, verify,
// resend, forgot and reset, change), silent refresh on load and before expiry, sign-out of this
// device, the others or everywhere, the signed-in devices, the data export and account deletion.
// The access token lives in this module's memory only: never in storage, never in a log. The refresh
// token is the HttpOnly __Host-rt cookie, the browser's business. Tokens mailed to the person arrive
// in the URL fragment (never sent to a server), are read once and removed from the address bar.
import {$, showMessage} from "./dom.js";
import {Problem, problemOf, session} from "./session.js";

// The cookie routes want JSON, a non-empty X-CSRF-Token and credentials (the __Host-rt cookie).
const COOKIE_ROUTE = {"Content-Type": "application/json", "X-CSRF-Token": "1"};
const ONE_TIME_TOKEN = /^[A-Za-z0-9_-]{16,256}$/;
const TABS = {signin: "login-form", register: "register-form", forgot: "forgot-form"};

export let accessToken = null; // read by lab.js's request(); only this module assigns it
let api = (path) => path;
let afterSignIn = () => {};
let refreshTimer = null;
let refreshDue = 0; // when the access token should be renewed (ms since the epoch), 0 when signed out
let resetToken = null; // a password-reset token from a mail link, until it is used
let unverifiedEmail = "";
let markShown;
const firstShown = new Promise((resolve) => { markShown = resolve; });

// --- messages and busy forms ---------------------------------------------------------------------

export const tell = (id, text, problem = false) => showMessage($(id), text, problem);
// A message for whichever block is showing (fragments can arrive signed in or out).
const notice = (text, problem = false) => tell(session.me ? "account-message" : "auth-message", text, problem);

// Runs one action for a form or section: a second press while it runs does nothing, and a network
// failure or a refused request is said in the section's message. Controls are not disabled, so the
// keyboard focus stays where it was.
export async function busy(box, messageId, work) {
  if (box.getAttribute("aria-busy") === "true") return;
  box.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (err) {
    tell(messageId, err instanceof Problem ? err.message
      : `The request did not go through (${err.message}). Check your connection and try again.`, true);
  } finally {
    box.setAttribute("aria-busy", "false");
  }
}

function submit(formId, messageId, work) {
  const form = $(formId);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, messageId, work);
  });
}

const postJson = (path, body, cookie = false) => fetch(api(path), {
  method: "POST", headers: COOKIE_ROUTE, body: JSON.stringify(body), ...(cookie ? {credentials: "include"} : {}),
});

// --- the token: refresh on load, before expiry, and when a tab comes back ------------------------

function schedule(seconds) {
  clearTimeout(refreshTimer);
  const wait = Math.max(30, seconds) * 1000;
  refreshDue = Date.now() + wait;
  refreshTimer = setTimeout(renew, wait);
}

function forget() {
  accessToken = null;
  clearTimeout(refreshTimer);
  refreshDue = 0;
}

function signedIn(body) {
  accessToken = body.access_token;
  schedule(body.expires_in - 60); // a minute before it expires
}

// true with a fresh access token. 204: no session on this device (not an error); 401: the session
// ended (signed out elsewhere, revoked, expired, the account deleted); anything else (offline, 503):
// keep what we have and try again in 30 s.
export async function refresh() {
  let res;
  try {
    res = await fetch(api("/auth/refresh"), {method: "POST", credentials: "include", headers: COOKIE_ROUTE});
  } catch {
    schedule(30);
    return false;
  }
  if (res.status === 200) {
    signedIn(await res.json());
    return true;
  }
  if (res.status !== 204 && res.status !== 401) {
    schedule(30);
    return false;
  }
  const wasSignedIn = accessToken !== null;
  forget();
  if (res.status === 401) {
    tell("auth-message", (await problemOf(res)).detail, true);
    if (wasSignedIn) await showAccount();
  }
  return false;
}

async function renew() {
  const had = accessToken !== null;
  if (await refresh() && !had) await showAccount(); // back after a failed attempt
}

document.addEventListener("visibilitychange", () => {
  // A background tab's timers are throttled: catch up as soon as it is visible again.
  if (document.visibilityState === "visible" && refreshDue && Date.now() >= refreshDue) renew();
});

// --- the two blocks: signed out and signed in ------------------------------------------------------

// Reads /me with the access token and shows the matching block (the name is filled before it shows).
export async function showAccount() {
  let me = null;
  if (accessToken !== null) {
    try {
      const res = await fetch(api("/me"), {headers: {Authorization: `Bearer ${accessToken}`}});
      if (res.ok) {
        me = await res.json();
      } else {
        forget();
        tell("auth-message", (await problemOf(res)).detail, true);
      }
    } catch (err) {
      tell("auth-message", `Your account could not be loaded (${err.message}). Reload the page to try again.`, true);
    }
  }
  if (me) {
    $("who").textContent = me.email;
    $("change-username").value = me.email;
    showMethods(me);
  }
  session.changed(me);
  $("signed-in").hidden = me === null;
  $("signed-out").hidden = me !== null;
  if (me === null) {
    for (const id of ["current-password", "new-password", "delete-password"]) $(id).value = "";
    $("delete-confirm").checked = false;
    $("account-details").open = false;
    $("sessions").replaceChildren();
    for (const id of ["account-message", "sessions-message", "change-message", "data-message", "delete-message"]) {
      tell(id, "");
    }
    if (resetToken) showReset();
  } else if ($("account-details").open) {
    busy($("devices"), "sessions-message", async () => (await manage()).loadSessions());
  }
  markShown();
}

// --- signed out: tabs for Sign in / Create account / Forgot password -------------------------------

function selectTab(name, {focusTab = false} = {}) {
  $("auth-tabs").hidden = false;
  $("reset-form").hidden = true;
  for (const [tab, panel] of Object.entries(TABS)) {
    const button = $(`tab-${tab}`);
    const selected = tab === name;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(panel).hidden = !selected;
  }
  if (focusTab) $(`tab-${name}`).focus();
}

function showReset() {
  $("auth-tabs").hidden = true;
  for (const panel of Object.values(TABS)) $(panel).hidden = true;
  $("reset-form").hidden = false;
  $("reset-password").focus();
}

function setUpTabs() {
  const names = Object.keys(TABS);
  for (const name of names) {
    $(`tab-${name}`).addEventListener("click", () => {
      selectTab(name);
      tell("auth-message", "");
    });
  }
  $("auth-tabs").addEventListener("keydown", (event) => {
    const current = names.findIndex((n) => $(`tab-${n}`).getAttribute("aria-selected") === "true");
    const moves = {ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: names.length - 1};
    if (!(event.key in moves)) return;
    event.preventDefault();
    selectTab(names[(moves[event.key] + names.length) % names.length], {focusTab: true});
  });
}

function setUpSignedOut() {
  setUpTabs();

  submit("login-form", "auth-message", async () => {
    const email = $("email").value.trim();
    const res = await postJson("/auth/login", {email, password: $("password").value}, true);
    if (res.status === 200) {
      signedIn(await res.json());
      $("password").value = "";
      $("resend-row").hidden = true;
      tell("auth-message", "");
      await showAccount();
      if (session.me) $("account-title").focus();
      afterSignIn();
      return;
    }
    const problem = await problemOf(res);
    // A wrong password and an unconfirmed address answer alike (so nobody learns who has an account):
    // offer the confirmation mail again either way.
    $("resend-row").hidden = res.status !== 401;
    if (res.status === 401) unverifiedEmail = email;
    tell("auth-message", problem.detail, true);
    if (res.status === 401) $("password").select();
  });

  $("resend").addEventListener("click", () => busy($("login-form"), "auth-message", async () => {
    const email = $("email").value.trim() || unverifiedEmail;
    if (!email) {
      tell("auth-message", "Type your email address first, then press Send the link again.", true);
      $("email").focus();
      return;
    }
    const res = await postJson("/auth/verify-email/resend", {email});
    if (res.status !== 202) return tell("auth-message", (await problemOf(res)).detail, true);
    tell("auth-message", `Check your inbox: we sent a new confirmation link to ${email}.`);
  }));

  submit("register-form", "auth-message", async () => {
    const email = $("register-email").value.trim();
    const res = await postJson("/auth/register", {email, password: $("register-password").value,
      name: $("register-name").value.trim()}, true);
    if (res.status !== 202) return tell("auth-message", (await problemOf(res)).detail, true);
    $("register-password").value = "";
    // The same words whether or not the address already had an account (that owner gets a mail).
    tell("auth-message", `Check your inbox: we sent a link to ${email}. Open it to confirm your address, then sign in.`);
  });

  submit("forgot-form", "auth-message", async () => {
    const email = $("forgot-email").value.trim();
    const res = await postJson("/auth/password-reset", {email});
    if (res.status !== 202) return tell("auth-message", (await problemOf(res)).detail, true);
    tell("auth-message", `If ${email} has an account with a password, a link to choose a new one is on its way. ` +
      "Check your inbox: the link works once, for 30 minutes.");
  });

  submit("reset-form", "auth-message", async () => {
    const res = await postJson("/auth/password-reset/confirm", {token: resetToken, password: $("reset-password").value});
    const problem = res.ok ? null : await problemOf(res);
    if (problem && problem.slug !== "invalid-link") return tell("auth-message", problem.detail, true); // e.g. too common
    resetToken = null;
    $("reset-password").value = "";
    if (problem) { // used, expired or unknown: ask for a new link
      selectTab("forgot");
      tell("auth-message", problem.detail, true);
      $("forgot-email").focus();
      return;
    }
    selectTab("signin");
    tell("auth-message", (await res.json()).detail);
    $("email").focus();
  });

  $("reset-cancel").addEventListener("click", () => {
    resetToken = null;
    $("reset-password").value = "";
    selectTab("signin", {focusTab: true});
  });
}

// --- signed in: sign-out here; the rest (devices, password, export, deletion) in account-manage.js -

// 401: this device was already signed out (from another device): it is signed out either way.
export async function logout(scope) {
  const res = await fetch(api("/auth/logout"), {method: "POST", credentials: "include", headers: COOKIE_ROUTE,
    body: JSON.stringify({scope})});
  if (res.status !== 204 && res.status !== 401) throw new Problem((await problemOf(res)).detail);
  return res.status;
}

// This page is signed out now (the server side is done): show the sign-in screen and say why.
export async function signedOut(message) {
  forget();
  await showAccount();
  if (!resetToken) selectTab("signin"); // a reset link waiting for the sign-out keeps its form
  tell("auth-message", message);
  if (!resetToken) $("signin-title").focus();
}

// The account management loads only when the person opens it (it is not needed to sign in or out).
const manage = () => import("./account-manage.js");

function setUpSignedIn() {
  $("logout").addEventListener("click", () => busy($("signed-in"), "account-message", async () => {
    await logout("local");
    await signedOut("You are signed out on this device.");
  }));
  $("logout-all").addEventListener("click", () => busy($("signed-in"), "account-message", async () => {
    await logout("global");
    await signedOut("You are signed out on every device.");
  }));
  $("account-details").addEventListener("toggle", () => {
    if ($("account-details").open && session.me) busy($("devices"), "sessions-message", async () => (await manage()).loadSessions());
  });
  $("logout-others").addEventListener("click", () => busy($("devices"), "sessions-message", async () => (await manage()).signOutOthers()));
  submit("change-form", "change-message", async () => (await manage()).changePassword());
  $("export").addEventListener("click", () => busy($("data"), "data-message", async () => (await manage()).exportData()));
  submit("delete-form", "delete-message", async () => (await manage()).deleteAccount());
}

// --- links from mails (#verify-email=, #reset-password=, #reset-password, #signin) and Google --------

async function verifyEmail(token) {
  const res = await postJson("/auth/verify-email", {token});
  const problem = res.ok ? null : await problemOf(res);
  if (!session.me) {
    selectTab("signin");
    $("resend-row").hidden = !problem;
    $("email").focus();
  }
  notice(problem ? `${problem.detail} Type your email and press Send the link again.` : (await res.json()).detail,
    Boolean(problem));
}

async function followFragment() {
  const match = /^#(verify-email|reset-password|signin)(?:=(.*))?$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search); // the token leaves the address bar
  await firstShown;
  const [, kind, token] = match;
  if (token !== undefined && !ONE_TIME_TOKEN.test(token)) {
    notice("This link is incomplete: open it again from the mail, or ask for a new one.", true);
    return;
  }
  if (kind === "verify-email" && token) {
    await busy($("account"), session.me ? "account-message" : "auth-message", () => verifyEmail(token));
  } else if (kind === "reset-password" && token) {
    resetToken = token;
    if (session.me) {
      notice("To choose a new password with this link, sign out first: the form opens then. Or change your " +
        "password below with the current one.");
    } else {
      tell("auth-message", "");
      showReset();
    }
  } else if (kind === "reset-password" && session.me) {
    $("account-details").open = true;
    $("current-password").focus();
  } else if (!session.me) {
    selectTab(kind === "reset-password" ? "forgot" : "signin");
    $(kind === "reset-password" ? "forgot-email" : "email").focus();
  }
}

// Google's callback sends the browser back with ?signin_error=<code> when the sign-in did not happen.
function googleOutcome() {
  const params = new URLSearchParams(location.search);
  const error = params.get("signin_error");
  if (error === null) return;
  params.delete("signin_error");
  const query = params.toString();
  history.replaceState(null, "", location.pathname + (query ? `?${query}` : "") + location.hash);
  const told = GOOGLE_REFUSALS[error]
    || `Google sign-in did not finish (${error.replace(/[^a-z_]/gi, "").slice(0, 40)}). Try again.`;
  if (error === "account_exists") selectTab("forgot");
  tell("auth-message", told, true);
  tell("account-message", told, true); // a refused "Connect Google" comes back signed in
}

// What the callback's refusals mean for the person, and what to do (it sends them back here).
const GOOGLE_REFUSALS = {
  access_denied: "Google sign-in was canceled: you are not signed in.",
  account_exists: "An ML Lab account with this email already signs in with a password. If you set that password, "
    + "sign in with it and connect Google under Account. If you did not, reset the password below: the link goes "
    + "to your inbox, and resetting signs out every device that used the old one.",
  google_in_use: "That Google account already signs in to another ML Lab account.",
  google_email_mismatch: "Connect the Google account with the same email address as your ML Lab account.",
  account_disabled: "This account is disabled or being deleted; it cannot sign in.",
};

const METHOD_NAMES = {password: "email and password", google: "Google"};

function showMethods(me) {
  const methods = me.providers || [];
  $("methods-list").textContent = methods.length
    ? `You sign in with ${methods.map((m) => METHOD_NAMES[m] || m).join(" or ")}.` : "";
  const canConnect = methods.includes("password") && !methods.includes("google");
  $("connect-google-row").hidden = !canConnect;
  // Back to this page; the refresh cookie tells the API which password session asks.
  $("connect-google").href = api(`/auth/google/login?link=1&return_to=${encodeURIComponent(location.pathname)}`);
}

function googleLink() {
  // Back to this page after Google (the API checks it is a path on this site); not billing's return.
  const params = new URLSearchParams(location.search);
  for (const name of ["billing", "subscription_id", "ba_token", "token", "signin_error"]) params.delete(name);
  const query = params.toString();
  const back = location.pathname + (query ? `?${query}` : "");
  $("google").href = api(`/auth/google/login?return_to=${encodeURIComponent(back)}`);
}

// Called once by lab.js before its first refresh(): wires the forms and reads what the URL brought.
export function startAccount(apiUrl, {afterSignIn: after} = {}) {
  api = apiUrl;
  if (after) afterSignIn = after;
  setUpSignedOut();
  setUpSignedIn();
  googleOutcome();
  googleLink();
  followFragment();
  window.addEventListener("hashchange", followFragment); // a mail link opened in a tab already here
}
