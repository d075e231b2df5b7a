// Renders the server's consent challenge and posts the decision with its one-time CSRF token.
(async () => {
  const id = new URLSearchParams(location.search).get("oauth_request_id") || "";
  const error = document.getElementById("error");
  const form = document.getElementById("form");
  const response = await fetch("/oauth/authorize?" + new URLSearchParams({ oauth_request_id: id }),
                               { credentials: "same-origin", headers: { Accept: "application/json" } });
  const challenge = await response.json().catch(() => ({}));
  form.hidden = false;
  if (!response.ok) {
    error.textContent = challenge.message || "This request cannot be authorized";
    return;
  }
  document.getElementById("client").textContent = challenge.client_display_name;
  document.getElementById("resource").textContent = challenge.resource_display_name;
  document.getElementById("scopes").textContent = challenge.scopes.join(", ");
  const select = document.getElementById("workspace");
  for (const ws of challenge.workspaces) {
    const option = document.createElement("option");
    option.value = ws.id;
    option.textContent = `${ws.name} (${ws.type}, ${ws.role})`;
    select.append(option);
  }
  async function decide(decision) {
    const answer = await fetch("/oauth/authorize", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ oauth_request_id: challenge.oauth_request_id, csrf_token: challenge.csrf_token,
                             decision, workspace_id: select.value }),
    });
    const body = await answer.json().catch(() => ({}));
    if (answer.ok) location.assign(body.redirect_url);
    else error.textContent = body.message || "Failed";
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); decide("allow"); });
  document.getElementById("deny").addEventListener("click", () => decide("deny"));
})();
