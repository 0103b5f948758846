// Calls to the station's API: the session (login, CSRF header), and every refusal turned into a
// translated message a person can act on. Actions always ask for a login, even where the API would
// let an anonymous caller through (the audit trail names a person).
import { t } from "./i18n.js";
import { $ } from "./ui.js";

const SESSION = "/api/v1/session";
let current = null; // {kind, user, role, scopes, csrf_token}
const listeners = new Set();

export class ApiProblem extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = () => current;
export const onSession = (listener) => listeners.add(listener);
const tell = () => listeners.forEach((listener) => listener(current));

export async function loadSession() {
  try {
    const response = await fetch(SESSION, { credentials: "same-origin", cache: "no-store" });
    current = response.ok ? await response.json() : null;
  } catch {
    current = null;
  }
  tell();
  return current;
}

function problemOf(status, body) {
  const message = body?.error?.message ?? "";
  const code = body?.error?.code ?? "";
  const keys = { 401: "error.session_expired", 403: "error.forbidden", 404: "error.not_found", 409: "error.conflict",
    413: "error.invalid", 422: "error.invalid", 429: "error.throttled", 503: "error.unavailable" };
  return new ApiProblem(t(keys[status] ?? "error.server", { message, status }), status, code);
}

async function send(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && current?.csrf_token) headers["X-CSRF-Token"] = current.csrf_token;
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    // No answer: the connection dropped or the service restarted while the request was on its way.
    throw new ApiProblem(method === "GET" ? t("error.connection") : t("error.connection_action"), 0, "connection");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw problemOf(response.status, data);
  return data;
}

// A session that ended (expired, logged out elsewhere, user removed) makes every request with its cookie
// fail with 401, reads included: ask for the login once, whoever noticed first.
let expiredPrompt = null;
export function sessionExpired() {
  current = null;
  tell();
  expiredPrompt ??= login(t("error.session_expired_login")).finally(() => { expiredPrompt = null; });
  return expiredPrompt;
}

// Whether the session cookie is still accepted (after the event stream failed, say).
export async function checkSession() {
  try {
    const response = await fetch(SESSION, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) await sessionExpired();
  } catch { /* not reachable: the connection state says so */ }
}

export async function get(path) {
  try {
    return await send("GET", path);
  } catch (problem) {
    if (problem.status !== 401) throw problem;
    await sessionExpired();
    return send("GET", path);
  }
}

// Ask for a login before an action's form is filled in (act() asks too, for actions without a form).
export async function ensureLogin() {
  if (current?.kind !== "user") await login(t("session.needed"));
}

// An action: needs a logged-in person; an expired session asks for the login again and retries once.
export async function act(method, path, body) {
  await ensureLogin();
  try {
    return await send(method, path, body);
  } catch (problem) {
    if (problem.status !== 401) throw problem;
    await sessionExpired();
    return send(method, path, body);
  }
}

// The login dialog; resolves once logged in, rejects when cancelled.
export function login(why = "") {
  const dialog = $("login-dialog");
  const form = $("login-form");
  const error = $("login-error");
  $("login-why").textContent = why;
  error.textContent = "";
  form.reset();
  return new Promise((resolve, reject) => {
    const cancel = () => { dialog.close(); reject(new ApiProblem(t("session.cancelled"), 0, "cancelled")); };
    form.querySelector("[data-close]").onclick = cancel;
    dialog.oncancel = (event) => { event.preventDefault(); cancel(); };
    form.onsubmit = async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      try {
        current = await send("POST", SESSION, { user: data.get("user"), pin: data.get("pin") });
        dialog.close();
        tell();
        resolve(current);
      } catch (problem) {
        error.textContent = problem.status === 401 ? t("session.wrong") : problem.message;
      }
    };
    dialog.showModal();
    form.querySelector("input[name=user]").focus();
  });
}

export async function logout() {
  try { await send("DELETE", SESSION); } catch { /* already ended */ }
  await loadSession();
}
