// The one-time token travels in the URL fragment, which browsers never send to servers or in Referer.
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(event.target);
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
  const error = document.getElementById("error");
  const response = await fetch("/api/auth/setup", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token, username: data.get("username"), password: data.get("password"),
                           email: data.get("email") || undefined }),
  });
  if (response.ok) {
    history.replaceState(null, "", "/auth/setup");
    location.assign("/auth/login");
    return;
  }
  const body = await response.json().catch(() => ({}));
  error.textContent = body.message || "Setup failed";
});
// The button stays disabled until the handler above is attached, so a click
// while this script loads can never submit the form natively.
document.querySelector("#form button[type=submit]").disabled = false;
document.getElementById("form").dataset.ready = "true";
