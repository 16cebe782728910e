/* The sign-in page: the password form and the smartcard button both call the sign-in API
 * (INTERFACE §4) and, once signed in, follow redirect_to back to the authorization endpoint. */
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const messages = data.messages || {};
  const flow = data.flow;
  function t(key) { return messages[key] || key; }
  const summary = document.getElementById("form-error");

  function formError(message) {
    summary.textContent = message;
    summary.hidden = false;
    summary.setAttribute("tabindex", "-1");
    summary.focus();
  }
  function clear() {
    summary.hidden = true;
    document.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    document.querySelectorAll(".error").forEach(function (el) { el.hidden = true; el.textContent = ""; });
  }
  function fieldError(name, message) {
    const input = document.getElementById(name);
    const slot = document.getElementById(name + "-error");
    input.setAttribute("aria-invalid", "true");
    slot.textContent = message;
    slot.hidden = false;
    input.focus();
  }
  function describe(body, status) {
    if (status === 429) return t("error.too_many_requests");
    if (!body || !body.error) return t("error.generic");
    if (body.error === "invalid_card") return window.authsvcCard.refusalText(t, body);
    const key = "error." + body.error;
    return messages[key] ? messages[key] : (body.error_description || t("error.generic"));
  }
  async function post(path, payload) {
    try {
      const response = await fetch(data.api + path, {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(Object.assign({ csrf_token: flow.csrf_token }, payload)),
      });
      const body = await response.json().catch(function () { return {}; });
      return { ok: response.ok, status: response.status, body: body };
    } catch (e) {
      return { ok: false, status: 0, body: { error: "network" } };
    }
  }
  function done(result) {
    if (result.ok && result.body.redirect_to) { window.location.assign(result.body.redirect_to); return true; }
    if (result.body && (result.body.error === "flow_expired" || result.body.error === "flow_not_found")) {
      formError(t("error." + result.body.error));
      return true;
    }
    return false;
  }

  const form = document.getElementById("login-form");
  if (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      clear();
      if (!form.matricule.value.trim()) { fieldError("matricule", t("error.required")); return; }
      if (!form.password.value) { fieldError("password", t("error.required")); return; }
      form.querySelector("button").disabled = true;
      const result = await post("/password", { matricule: form.matricule.value, password: form.password.value });
      form.querySelector("button").disabled = false;
      if (done(result)) return;
      form.password.value = "";
      formError(result.status === 0 ? t("error.network") : describe(result.body, result.status));
    });
  }

  const useCard = document.getElementById("use-card");
  if (useCard) {
    const status = document.getElementById("card-status");
    const say = function (code, detail) {
      const key = messages["card." + code] ? "card." + code : "error.generic";
      const link = detail && detail.pinUrl ? { pinUrl: detail.pinUrl, linkText: t("card.open_agent") } : null;
      window.authsvcCard.showStatus(status, t(key), code, link);
    };
    useCard.addEventListener("click", async function () {
      clear();
      const popup = window.authsvcCard.openPinWindow();
      useCard.disabled = true;
      try {
        const fresh = await fetch(data.api, { credentials: "same-origin", cache: "no-store" }).then(function (r) { return r.json(); });
        if (!fresh.challenge) { formError(describe(fresh, 400)); return; }
        const token = await window.authsvcCard.authenticate(fresh.challenge, {
          agentUrl: data.agent_url, popup: popup, lang: data.lang, onStatus: say,
        });
        say("checking");
        const result = await post("/smartcard", { auth_token: token });
        if (done(result)) return;
        say("refused");
        formError(describe(result.body, result.status));
      } catch (error) {
        say(error.code || "failed");
      } finally {
        useCard.disabled = false;
      }
    });
  }
})();
