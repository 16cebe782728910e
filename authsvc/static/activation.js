/* The activation pages: each form posts to the flows API (INTERFACE §4) and shows its answer.
 * No inline script (strict CSP): the page's data comes from the JSON block #page-data. */
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const messages = data.messages || {};
  function t(key) { return messages[key] || key; }

  const summary = document.getElementById("form-error");

  function clearErrors(form) {
    if (summary) { summary.hidden = true; summary.textContent = ""; }
    if (!form) return;
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    form.querySelectorAll(".error").forEach(function (el) { el.hidden = true; el.textContent = ""; });
  }

  function fieldError(name, message) {
    const input = document.getElementById(name);
    const slot = document.getElementById(name + "-error");
    if (!input || !slot) return formError(message);
    input.setAttribute("aria-invalid", "true");
    slot.textContent = message;
    slot.hidden = false;
    input.focus();
  }

  function formError(message) {
    summary.textContent = message;
    summary.hidden = false;
    summary.setAttribute("tabindex", "-1");
    summary.focus();
  }

  function describe(body, status) {
    if (status === 429) return t("error.too_many_requests");
    if (!body || !body.error) return t("error.generic");
    if (body.error === "weak_password" && body.reason) return t("error.weak_password." + body.reason);
    if (body.error === "invalid_code" && body.reason === "code_expired") return t("error.code_expired");
    if (body.error === "invalid_card") return window.authsvcCard.refusalText(t, body);
    if (body.error === "invalid_activation" && body.reason && messages["error.invalid_activation." + body.reason]) {
      return t("error.invalid_activation." + body.reason);
    }
    const key = "error." + body.error;
    return messages[key] ? messages[key] : (body.error_description || t("error.generic"));
  }

  async function post(url, payload) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(payload),
      });
    } catch (e) {
      return { ok: false, status: 0, body: { error: "network" } };
    }
    const body = await response.json().catch(function () { return {}; });
    return { ok: response.ok, status: response.status, body: body };
  }

  function busy(form, on) {
    form.querySelectorAll("button").forEach(function (b) { b.disabled = on; });
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  function handle(formId, buildRequest, fieldFor) {
    const form = document.getElementById(formId);
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      clearErrors(form);
      const request = buildRequest(form);
      if (!request) return;
      busy(form, true);
      const result = await post(request.url, request.payload);
      busy(form, false);
      if (result.ok) { request.done(result.body); return; }
      const message = result.status === 0 ? t("error.network") : describe(result.body, result.status);
      const field = fieldFor && fieldFor(result.body);
      if (result.body && (result.body.error === "flow_expired" || result.body.error === "flow_not_found")) {
        window.location.assign(withLang("/activate?error=" + result.body.error));
        return;
      }
      if (field) fieldError(field, message); else formError(message);
    });
  }

  function required(form, names) {
    let ok = true;
    names.slice().reverse().forEach(function (name) {
      const input = form.querySelector("#" + name);
      if (input && !input.value.trim()) { fieldError(name, t("error.required")); ok = false; }
    });
    return ok;
  }

  // The language chosen with ?lang= stays chosen from page to page.
  const chosenLang = new URLSearchParams(window.location.search).get("lang");
  function withLang(url) {
    if (!chosenLang) return url;
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + "lang=" + encodeURIComponent(chosenLang);
  }
  function reload() { window.location.replace(withLang(window.location.pathname)); }

  // --- start: letter code + matricule ---
  handle("start-form", function (form) {
    if (!required(form, ["activation_code", "matricule"])) return null;
    return {
      url: data.api,
      payload: { activation_code: form.activation_code.value, matricule: form.matricule.value, lang: data.lang },
      done: function (body) { window.location.assign(withLang(data.page + encodeURIComponent(body.flow_id))); },
    };
  });

  const flow = data.flow;
  if (!flow) return;
  const base = data.api;

  // --- email (and change of email) ---
  handle("email-form", function (form) {
    if (!required(form, ["email"])) return null;
    return {
      url: base + "/email", payload: { csrf_token: flow.csrf_token, email: form.email.value.trim() },
      done: reload,
    };
  }, function (body) { return body && body.error === "invalid_email" ? "email" : null; });

  // --- the code from the email ---
  handle("verify-form", function (form) {
    if (!required(form, ["code"])) return null;
    return {
      url: base + "/email/verify", payload: { csrf_token: flow.csrf_token, code: form.code.value.trim() },
      done: reload,
    };
  }, function (body) { return body && body.error === "invalid_code" ? "code" : null; });

  const resend = document.getElementById("resend");
  if (resend) {
    resend.addEventListener("click", async function () {
      clearErrors(null);
      resend.disabled = true;
      const result = await post(base + "/email", { csrf_token: flow.csrf_token, email: resend.dataset.email });
      resend.disabled = false;
      const status = document.getElementById("verify-status");
      if (result.ok) { status.textContent = t("verify.sent"); } else { formError(describe(result.body, result.status)); }
    });
  }

  // --- password ---
  const show = document.getElementById("show-password");
  if (show) {
    show.addEventListener("change", function () {
      ["password", "password2"].forEach(function (id) { document.getElementById(id).type = show.checked ? "text" : "password"; });
    });
  }
  handle("password-form", function (form) {
    if (!required(form, ["password", "password2"])) return null;
    if (form.password.value !== form.password2.value) { fieldError("password2", t("password.mismatch")); return null; }
    return {
      url: base + "/password", payload: { csrf_token: flow.csrf_token, password: form.password.value },
      done: reload,
    };
  }, function (body) { return body && body.error === "weak_password" ? "password" : null; });

  // --- smartcard ---
  const useCard = document.getElementById("use-card");
  if (useCard) {
    const status = document.getElementById("card-status");
    const say = function (code, detail) {
      const key = messages["card." + code] ? "card." + code : "error.generic";
      const link = detail && detail.pinUrl ? { pinUrl: detail.pinUrl, linkText: t("card.open_agent") } : null;
      window.authsvcCard.showStatus(status, t(key), code, link);
    };
    useCard.addEventListener("click", async function () {
      clearErrors(null);
      const popup = window.authsvcCard.openPinWindow();
      useCard.disabled = true;
      try {
        // a fresh challenge: the one in the page may have been used or have expired
        const fresh = await fetch(base, { credentials: "same-origin", cache: "no-store" }).then(function (r) { return r.json(); });
        if (!fresh.challenge) { if (popup) popup.close(); reload(); return; }
        const token = await window.authsvcCard.authenticate(fresh.challenge, {
          agentUrl: data.agent_url, popup: popup, lang: data.lang, onStatus: say,
        });
        say("checking");
        const result = await post(base + "/smartcard", { csrf_token: flow.csrf_token, auth_token: token });
        if (result.ok) { reload(); return; }
        say("refused");
        formError(describe(result.body, result.status));
      } catch (error) {
        say(error.code || "failed");
      } finally {
        useCard.disabled = false;
        useCard.textContent = t("card.retry");
      }
    });
  }
})();
