// The lab reads its API base from /config.json (same origin locally, api.<domain> in production).
const config = await fetch("/config.json").then((r) => r.json());
const api = (path) => `${config.api_base}${path}`;

async function showStatus() {
  const summary = document.getElementById("status-summary");
  const list = document.getElementById("status-list");
  try {
    const res = await fetch("/healthz");
    const body = await res.json();
    summary.textContent = body.status === "ok" ? "Everything is running." : "Some parts are down.";
    list.replaceChildren(...body.components.map((c) => {
      const li = document.createElement("li");
      li.className = c.state;
      li.textContent = `${c.name} (${c.kind}) ${c.state}`;
      return li;
    }));
  } catch (err) {
    summary.textContent = `The backend is not reachable: ${err.message}`;
  }
}

await fetch(api("/.well-known/jwks.json"));
showStatus();
