// Posts the credentials as JSON; the server answers with an HttpOnly session cookie.
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(event.target);
  const error = document.getElementById("error");
  error.textContent = "";
  const response = await fetch("/api/auth/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ username: data.get("username"), password: data.get("password") }),
  });
  if (response.ok) {
    const next = new URLSearchParams(location.search).get("next") || "/";
    // Only paths of this server: "//host" and "/\host" would leave it.
    location.assign(/^\/(?![\/\\])/.test(next) ? next : "/");
    return;
  }
  const body = await response.json().catch(() => ({}));
  error.textContent = body.message || "Sign-in failed";
});
// The button stays disabled until the handler above is attached, so a click
// while this script loads can never submit the form natively.
document.querySelector("#form button[type=submit]").disabled = false;
document.getElementById("form").dataset.ready = "true";
