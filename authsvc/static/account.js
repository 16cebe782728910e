/* The account page: lists the account's sessions, ends them, changes the password — all through
 * the account API (/api/account/…). No inline script (strict CSP): the page's data comes from the
 * JSON block #page-data. Nothing from the API is inserted as HTML: text only. */
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  if (!data.signed_in) return;
  const messages = data.messages || {};
  const account = data.account;
  const api = data.api;
  function t(key, values) {
    let text = messages[key] || key;
    Object.keys(values || {}).forEach(function (name) { text = text.split("{" + name + "}").join(values[name]); });
    return text;
  }
  const summary = document.getElementById("form-error");
  const status = document.getElementById("account-status");

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (isNaN(date.getTime())) return iso;
    try {
      return new Intl.DateTimeFormat(data.lang, { dateStyle: "medium", timeStyle: "short" }).format(date);
    } catch (e) {
      return date.toLocaleString();
    }
  }
  function timeElement(iso) {
    const el = document.createElement("time");
    el.dateTime = iso || "";
    el.textContent = formatTime(iso);
    return el;
  }
  // the times the server wrote in UTC, shown in the person's own time zone
  document.querySelectorAll("time[datetime]").forEach(function (el) { el.textContent = formatTime(el.dateTime); });

  function clearErrors(form) {
    summary.hidden = true;
    summary.textContent = "";
    status.textContent = "";
    if (!form) return;
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    form.querySelectorAll(".error").forEach(function (el) { el.hidden = true; el.textContent = ""; });
  }
  function formError(message) {
    summary.textContent = message;
    summary.hidden = false;
    summary.setAttribute("tabindex", "-1");
    summary.focus();
  }
  function fieldError(name, message) {
    const input = document.getElementById(name);
    const slot = document.getElementById(name + "-error");
    if (!input || !slot) { formError(message); return; }
    input.setAttribute("aria-invalid", "true");
    slot.textContent = message;
    slot.hidden = false;
    input.focus();
  }
  function describe(body, statusCode) {
    if (statusCode === 429) return t("error.too_many_requests");
    if (!body || !body.error) return t("error.generic");
    if (body.error === "network") return t("error.network");
    if (body.error === "weak_password" && body.reason && messages["error.weak_password." + body.reason]) {
      return t("error.weak_password." + body.reason);
    }
    const key = "error." + body.error;
    return messages[key] ? messages[key] : (body.error_description || t("error.generic"));
  }
  async function call(method, path, payload) {
    const options = { method: method, credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } };
    if (payload) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(Object.assign({ csrf_token: account.csrf_token }, payload));
    }
    let response;
    try {
      response = await fetch(api + path, options);
    } catch (e) {
      return { ok: false, status: 0, body: { error: "network" } };
    }
    const body = await response.json().catch(function () { return {}; });
    return { ok: response.ok, status: response.status, body: body };
  }
  function signedOutOr(result) {
    // the session ended elsewhere (or the account locked): the page shows "not signed in"
    if (result.body && (result.body.error === "login_required" || result.body.error === "account_locked")) {
      formError(describe(result.body, result.status));
      window.setTimeout(function () { window.location.reload(); }, 4000);
      return true;
    }
    return false;
  }

  // --- sessions ---
  const list = document.getElementById("sessions");
  const listStatus = document.getElementById("sessions-status");

  function row(dl, label, value) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = value;
    dl.appendChild(dt);
    dl.appendChild(dd);
  }
  function render(sessions) {
    list.textContent = "";
    sessions.forEach(function (s, index) {
      const li = document.createElement("li");
      const heading = document.createElement("h3");
      heading.id = "session-" + index;
      heading.textContent = s.current ? t("account.sessions.this") : t("account.sessions.other", { time: formatTime(s.created_at) });
      li.appendChild(heading);
      const dl = document.createElement("dl");
      dl.className = "claims";
      row(dl, t("account.sessions.started"), timeElement(s.created_at));
      row(dl, t("account.sessions.last_seen"), timeElement(s.last_seen_at));
      row(dl, t("account.sessions.level"), t("account.level.short." + s.level));
      row(dl, t("account.sessions.methods"), s.methods.map(function (m) { return t("account.method." + m); }).join(", "));
      row(dl, t("account.sessions.browser"), s.user_agent || t("account.sessions.unknown"));
      row(dl, t("account.sessions.ip"), s.ip || t("account.sessions.unknown"));
      row(dl, t("account.sessions.services"), s.services.length ? s.services.map(function (c) { return c.name; }).join(", ") : t("account.sessions.services.none"));
      li.appendChild(dl);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = s.current ? t("account.signout") : t("account.sessions.end");
      button.setAttribute("aria-describedby", heading.id);
      button.addEventListener("click", function () { end(s.sid, button); });
      const p = document.createElement("p");
      p.appendChild(button);
      li.appendChild(p);
      list.appendChild(li);
    });
  }
  async function load() {
    const result = await call("GET", "/sessions");
    if (!result.ok) {
      if (signedOutOr(result)) return;
      listStatus.textContent = describe(result.body, result.status);
      listStatus.classList.add("problem");
      return;
    }
    listStatus.textContent = "";
    listStatus.classList.remove("problem");
    render(result.body.sessions || []);
  }
  async function end(sid, button) {
    clearErrors(null);
    if (button) button.disabled = true;
    const result = await call("POST", "/sessions/" + encodeURIComponent(sid) + "/end", {});
    if (button) button.disabled = false;
    if (result.ok && result.body.signed_out) {
      status.textContent = t("account.signed_out");
      window.location.reload();
      return;
    }
    if (result.ok) {
      status.textContent = t("account.sessions.ended");
      load();
      return;
    }
    if (signedOutOr(result)) return;
    formError(describe(result.body, result.status));
    if (result.body && result.body.error === "session_not_found") load();
  }
  const signOut = document.getElementById("sign-out");
  signOut.addEventListener("click", function () { end(signOut.dataset.sid, signOut); });

  // --- password ---
  const form = document.getElementById("password-form");
  const currentField = document.getElementById("current-field");
  const show = document.getElementById("show-password");
  show.addEventListener("change", function () {
    ["current_password", "new_password", "new_password2"].forEach(function (id) {
      document.getElementById(id).type = show.checked ? "text" : "password";
    });
  });
  function needCurrent() {
    currentField.hidden = false;
    const note = document.getElementById("current-not-needed");
    if (note) note.hidden = true;
  }
  const fieldOf = {
    current_password_required: "current_password",
    invalid_current_password: "current_password",
    weak_password: "new_password",
    same_password: "new_password",
  };
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    clearErrors(form);
    const needsCurrent = !currentField.hidden;
    const current = form.current_password.value;
    const fresh = form.new_password.value;
    const again = form.new_password2.value;
    if (!again) fieldError("new_password2", t("error.required"));
    if (!fresh) fieldError("new_password", t("error.required"));
    if (needsCurrent && !current) fieldError("current_password", t("error.required"));
    if (!fresh || !again || (needsCurrent && !current)) return;
    if (fresh !== again) { fieldError("new_password2", t("password.mismatch")); return; }
    const payload = { new_password: fresh, lang: data.lang };
    if (needsCurrent) payload.current_password = current;
    form.querySelector("button[type=submit]").disabled = true;
    form.setAttribute("aria-busy", "true");
    const result = await call("POST", "/password", payload);
    form.querySelector("button[type=submit]").disabled = false;
    form.setAttribute("aria-busy", "false");
    if (result.ok) {
      form.reset();
      ["current_password", "new_password", "new_password2"].forEach(function (id) { document.getElementById(id).type = "password"; });
      status.textContent = t("account.password.done", { count: String(result.body.sessions_ended) });
      load();
      return;
    }
    if (signedOutOr(result)) return;
    const error = result.body && result.body.error;
    if (error === "invalid_current_password") form.current_password.value = "";
    if (error === "current_password_required") needCurrent();
    const message = result.status === 0 ? t("error.network") : describe(result.body, result.status);
    if (fieldOf[error]) fieldError(fieldOf[error], message); else formError(message);
  });

  load();
})();
