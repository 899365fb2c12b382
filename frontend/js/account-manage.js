// The signed-in account's management, loaded when the person opens "Devices, password and your
// data" (account.js wires the controls and calls these): the devices list with a sign-out per other
// device, sign out of the others, change the password, download the data, delete the account.
import {Problem, session} from "./session.js";
import {busy, logout, signedOut, tell} from "./account.js";
import {$, dateTime as when, el} from "./dom.js";

const METHODS = {password: "email and password", google: "Google"};

function deviceName(ua) {
  const browser = [[/Edg\//, "Edge"], [/OPR\//, "Opera"], [/Firefox\//, "Firefox"], [/Chrome\//, "Chrome"],
    [/Safari\//, "Safari"]].find(([re]) => re.test(ua))?.[1];
  const os = [[/Android/, "Android"], [/iPhone|iPad|iPod/, "iOS"], [/CrOS/, "ChromeOS"], [/Windows/, "Windows"],
    [/Mac OS X|Macintosh/, "macOS"], [/Linux/, "Linux"]].find(([re]) => re.test(ua))?.[1];
  if (browser && os) return `${browser} on ${os}`;
  return browser || os || (ua ? ua.slice(0, 60) : "Unknown device");
}

function sessionItem(s) {
  const name = deviceName(s.user_agent);
  const item = el("li", {className: s.current ? "current" : ""},
    el("span", {className: "device"}, el("strong", {textContent: name}),
      s.current ? el("span", {className: "badge", textContent: "This device"}) : null),
    el("small", {textContent: `Signed in ${when(s.created_at)} with ${METHODS[s.method] || s.method}`}),
    el("small", {textContent: `Last used ${when(s.refreshed_at)}${s.ip ? ` from ${s.ip}` : ""}`}));
  item.dataset.current = String(s.current);
  if (!s.current) {
    const button = el("button", {type: "button", textContent: "Sign out"});
    button.setAttribute("aria-label", `Sign out ${name}, signed in ${when(s.created_at)}`);
    button.addEventListener("click", () => busy($("devices"), "sessions-message", async () => {
      try {
        await session.request("DELETE", `/sessions/${s.id}`);
      } catch (err) {
        await loadSessions().catch(() => {}); // it may have ended meanwhile: show what is true now
        throw err;
      }
      item.remove();
      $("logout-others").hidden = !$("sessions").querySelector("[data-current=false]");
      tell("sessions-message", `${name} (signed in ${when(s.created_at)}) is signed out.`);
      $("devices-title").focus();
    }));
    item.append(button);
  }
  return item;
}

export async function loadSessions() {
  const list = $("sessions");
  list.setAttribute("aria-busy", "true");
  try {
    const {items} = await session.request("GET", "/sessions");
    list.replaceChildren(...items.map(sessionItem));
    $("logout-others").hidden = items.every((s) => s.current);
  } finally {
    list.setAttribute("aria-busy", "false");
  }
}

export async function signOutOthers() {
  if (await logout("others") === 401) return signedOut("This device was already signed out. Sign in again.");
  await loadSessions();
  tell("sessions-message", "Every other device is signed out.");
  $("devices-title").focus();
}

export async function changePassword() {
  const signOutOthers = $("sign-out-others").checked;
  let answer;
  try {
    answer = await session.request("POST", "/auth/password-change", {current_password: $("current-password").value,
      new_password: $("new-password").value, sign_out_others: signOutOthers});
  } catch (err) {
    if (err instanceof Problem && /current password/i.test(err.message)) $("current-password").select();
    throw err;
  }
  $("current-password").value = "";
  $("new-password").value = "";
  tell("change-message", answer.detail);
  if (signOutOthers) await loadSessions();
}

export async function exportData() {
  const data = await session.request("GET", "/account/export");
  const name = `mllab-export-${data.exported_at.slice(0, 10)}.json`;
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], {type: "application/json"}));
  const link = el("a", {href: url, download: name, hidden: true});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  tell("data-message", `Downloaded ${name}: your account, devices, projects, models, datasets, ` +
    "training runs and billing records.");
}

export async function deleteAccount() {
  const password = $("delete-password").value;
  try {
    await session.request("DELETE", "/account", password ? {password} : {});
  } finally {
    $("delete-password").value = "";
  }
  // Every session ended with the account, this one too. Signing out clears the now useless cookie;
  // the API answers 401 ("already signed out") for it, which is expected here.
  await logout("local").catch(() => {});
  await signedOut("Your account is deleted and every device is signed out. Your models, datasets and " +
    "files are removed for good in 30 days.");
}
