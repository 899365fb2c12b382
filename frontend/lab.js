// The lab shell: session handling as DESIGN section 4 describes. The access token lives in memory
// only; the refresh cookie (__Host-rt, HttpOnly) is the browser's business.
const config = await fetch("/config.json").then((r) => r.json());
const api = (path) => `${config.api_base}${path}`;
const COOKIE_ROUTE_HEADERS = {"Content-Type": "application/json", "X-CSRF-Token": "1"};
let accessToken = null;
let refreshTimer = null;
const $ = (id) => document.getElementById(id);

async function refresh() {
  const res = await fetch(api("/auth/refresh"), {method: "POST", credentials: "include", headers: COOKIE_ROUTE_HEADERS});
  if (res.status !== 200) return false; // 204: signed out (no error), 401: the session ended
  const body = await res.json();
  accessToken = body.access_token;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, Math.max(30, body.expires_in - 60) * 1000); // before expiry
  return true;
}

async function showAccount() {
  if (accessToken !== null) {
    const res = await fetch(api("/me"), {headers: {Authorization: `Bearer ${accessToken}`}});
    if (res.status === 200) {
      $("who").textContent = (await res.json()).email; // filled before it is shown
    } else {
      accessToken = null; // the session ended meanwhile
    }
  }
  const signedIn = accessToken !== null;
  $("signed-in").hidden = !signedIn;
  $("signed-out").hidden = signedIn;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const res = await fetch(api("/auth/login"), {method: "POST", credentials: "include", headers: COOKIE_ROUTE_HEADERS,
    body: JSON.stringify({email: $("email").value, password: $("password").value})});
  if (res.status === 200) {
    accessToken = (await res.json()).access_token;
    $("login-error").textContent = "";
    await refresh();
  } else {
    $("login-error").textContent = (await res.json()).detail;
  }
  showAccount();
});

async function logout(scope) {
  await fetch(api("/auth/logout"), {method: "POST", credentials: "include", headers: COOKIE_ROUTE_HEADERS,
    body: JSON.stringify({scope})});
  accessToken = null;
  clearTimeout(refreshTimer);
  showAccount();
}
$("logout").addEventListener("click", () => logout("local"));
$("logout-all").addEventListener("click", () => logout("global"));

async function showStatus() {
  const summary = $("status-summary");
  try {
    const body = await fetch("/healthz").then((r) => r.json());
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

await refresh();
showAccount();
showStatus();
