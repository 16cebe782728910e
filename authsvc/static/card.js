/* Getting a Web eID authentication token (INTERFACE §4) for a challenge, from the card.
 *
 * When the person clicks (never at page load: a loopback request may make the browser ask for a
 * permission), two ways are tried in this order (docs/card-agent.md, "Pages"):
 *  1. the card agent on this computer (the LuxTrust middleware's stand-in), asked first with
 *     GET /v1/status: POST /v1/authenticate, the agent's own window asks for the PIN (the PIN
 *     never reaches this page), the page polls for the token;
 *  2. only when no agent answers, the Web eID browser extension, through its window.postMessage
 *     protocol ("web-eid:status", "web-eid:authenticate" → "-ack" → "-success" | "-failure").
 *
 * authsvcCard.authenticate(challenge, {agentUrl, onStatus, popup, lang}) resolves with the token or
 * rejects with an Error whose .code is one of: no_agent, no_card, untrusted, pin_blocked,
 * cancelled, expired, webeid_version, failed. onStatus(code, detail) reports progress:
 * "probing", "no_card" (waiting for a card), "waiting", "wrong_pin", "popup_blocked" (detail:
 * {pinUrl}: the page shows a link), "extension".
 * While the agent's window is open, closing it cancels the request; a request the page gives up
 * (timeout, error, leaving) is cancelled at the agent (DELETE /v1/authenticate/{id}).
 */
"use strict";
(function () {
  const WEB_EID_LIBRARY_VERSION = "2.0.0";
  const STATUS_TIMEOUT = 1500; // ms: a refused connection fails at once, a busy agent answers fast
  const POLL_INTERVAL = 700;
  const CARD_WAIT = 2 * 60 * 1000; // how long "insert your card" waits for a card

  /* Web eID's error codes (web-eid.js ErrorCode) → this page's codes */
  const WEB_EID_ERRORS = {
    ERR_WEBEID_USER_CANCELLED: "cancelled",
    ERR_WEBEID_USER_TIMEOUT: "expired",
    ERR_WEBEID_ACTION_TIMEOUT: "expired",
    ERR_WEBEID_EXTENSION_UNAVAILABLE: "no_agent",
    ERR_WEBEID_NATIVE_UNAVAILABLE: "no_agent",
    ERR_WEBEID_VERSION_MISMATCH: "webeid_version",
    ERR_WEBEID_VERSION_INVALID: "webeid_version",
  };

  function failure(code, detail) {
    const error = new Error(detail || code);
    error.code = code;
    return error;
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // --- the Web eID extension ---

  function extensionRequest(message, ackTimeout, replyTimeout) {
    return new Promise(function (resolve, reject) {
      const initial = message.action;
      let acked = false;
      function cleanup() {
        window.removeEventListener("message", receive);
        clearTimeout(ackTimer);
        clearTimeout(replyTimer);
      }
      function receive(event) {
        if (event.source !== window || !event.data || typeof event.data.action !== "string") return;
        const action = event.data.action;
        if (action === initial + "-ack") { acked = true; clearTimeout(ackTimer); }
        else if (action === initial + "-success") { cleanup(); resolve(event.data); }
        else if (action === initial + "-failure") {
          cleanup();
          const webEidCode = (event.data.error && event.data.error.code) || "";
          reject(failure(WEB_EID_ERRORS[webEidCode] || "failed", webEidCode || "web-eid failure"));
        }
      }
      const ackTimer = setTimeout(function () { if (!acked) { cleanup(); reject(failure("no_extension")); } }, ackTimeout);
      const replyTimer = setTimeout(function () { cleanup(); reject(failure("expired")); }, replyTimeout);
      window.addEventListener("message", receive);
      window.postMessage(message, window.location.origin);
    });
  }

  function probeExtension() {
    if (!window.isSecureContext) return Promise.resolve(false);
    return extensionRequest({ action: "web-eid:status", libraryVersion: WEB_EID_LIBRARY_VERSION }, 700, 3000)
      .then(function () { return true; }, function (error) {
        // the extension is there but its native application is not (or is too old): say so
        if (error.code === "webeid_version") throw error;
        return false;
      });
  }

  function viaExtension(challenge, options) {
    return extensionRequest(
      {
        action: "web-eid:authenticate", libraryVersion: WEB_EID_LIBRARY_VERSION,
        challengeNonce: challenge.nonce, options: { lang: options.lang },
      },
      2000, 5 * 60 * 1000
    ).then(function (reply) {
      return {
        unverifiedCertificate: reply.unverifiedCertificate, algorithm: reply.algorithm,
        signature: reply.signature, format: reply.format, appVersion: reply.appVersion,
      };
    });
  }

  // --- the card agent ---

  function agentFetch(agentUrl, path, options) {
    return fetch(agentUrl + path, Object.assign({ mode: "cors", credentials: "omit", cache: "no-store" }, options))
      .catch(function () { throw failure("no_agent"); });
  }

  /* The agent's status, or null when no agent answers (refused, timed out, not an agent). */
  async function agentStatus(agentUrl) {
    let response;
    try {
      const signal = window.AbortSignal && AbortSignal.timeout ? AbortSignal.timeout(STATUS_TIMEOUT) : undefined;
      response = await fetch(agentUrl + "/v1/status", { mode: "cors", credentials: "omit", cache: "no-store", signal: signal });
    } catch (e) {
      return null;
    }
    if (response.status === 403) throw failure("untrusted");
    const body = await response.json().catch(function () { return null; });
    if (!response.ok || !body || body.protocol !== 1) return null;
    return body;
  }

  function popupClosed(popup) {
    try { return !!popup && popup.closed; } catch (e) { return false; }
  }

  function closePopup(popup) {
    try { if (popup && !popup.closed) popup.close(); } catch (e) { /* ignore */ }
  }

  /* Wait for a card in the reader; the person can give up by closing the agent's window. */
  async function waitForCard(agentUrl, status, options) {
    const deadline = Date.now() + CARD_WAIT;
    while (!status.cards || status.cards.length === 0) {
      options.onStatus("no_card");
      if (Date.now() > deadline) throw failure("no_card");
      if (popupClosed(options.popup)) throw failure("cancelled");
      await sleep(1500);
      status = await agentStatus(agentUrl);
      if (!status) throw failure("no_agent");
    }
    return status;
  }

  async function viaAgent(agentUrl, challenge, options) {
    const popup = options.popup; // opened by the caller during the click, so no pop-up blocker stops it
    let requestId = null;
    let finished = false;
    function cancel() {
      // the page gives up: the agent forgets the request, and its PIN window says it is over
      if (requestId === null || finished) return;
      finished = true;
      agentFetch(agentUrl, "/v1/authenticate/" + encodeURIComponent(requestId), { method: "DELETE", keepalive: true })
        .catch(function () { /* the agent forgets it after 5 minutes anyway */ });
    }
    window.addEventListener("pagehide", cancel);
    try {
      const started = await agentFetch(agentUrl, "/v1/authenticate", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ nonce: challenge.nonce }),
      });
      const body = await started.json().catch(function () { return {}; });
      if (started.status === 403) throw failure("untrusted");
      if (body.error === "no_card") throw failure("no_card");
      if (body.error === "pin_blocked") throw failure("pin_blocked");
      if (!started.ok || !body.request_id) throw failure("failed", body.error_description);
      requestId = body.request_id;
      const watched = popup && !popup.closed ? popup : null;
      if (watched) {
        watched.location.href = body.pin_url;
        options.onStatus("waiting");
      } else {
        options.onStatus("popup_blocked", { pinUrl: body.pin_url });
      }
      const deadline = Math.min(
        Date.parse(body.expires_at) || Infinity,
        Date.parse(challenge.expires_at) || Infinity,
        Date.now() + 5 * 60 * 1000
      );
      let lastError = null;
      while (Date.now() < deadline) {
        await sleep(POLL_INTERVAL);
        // read the closed flag before polling: the agent's window closes itself once done
        const closed = watched !== null && popupClosed(watched);
        const polled = await agentFetch(agentUrl, "/v1/authenticate/" + encodeURIComponent(requestId), {});
        const state = await polled.json().catch(function () { return {}; });
        if (state.status === "done") { finished = true; return state.auth_token; }
        if (state.status === "failed") { finished = true; throw failure(state.error || "failed", state.error_description); }
        if (!polled.ok) { finished = true; throw failure(polled.status === 404 ? "expired" : "failed"); }
        if (closed) throw failure("cancelled"); // the person closed the PIN window
        if (state.last_error && state.last_error !== lastError) { lastError = state.last_error; options.onStatus(lastError); }
      }
      throw failure("expired");
    } finally {
      cancel();
      window.removeEventListener("pagehide", cancel);
      closePopup(popup);
    }
  }

  async function authenticate(challenge, options) {
    const agentUrl = options.agentUrl.replace(/\/$/, "");
    try {
      options.onStatus("probing");
      const status = await agentStatus(agentUrl);
      if (status) {
        await waitForCard(agentUrl, status, options);
        return await viaAgent(agentUrl, challenge, options);
      }
      closePopup(options.popup);
      if (await probeExtension()) {
        options.onStatus("extension");
        return await viaExtension(challenge, options);
      }
      throw failure("no_agent");
    } catch (error) {
      closePopup(options.popup); // whatever went wrong, no empty window is left behind
      throw error;
    }
  }

  // Open the agent's window inside the click handler (before any await), so pop-up blockers allow it.
  function openPinWindow() {
    return window.open("about:blank", "authsvc-card-agent", "popup,width=480,height=600");
  }

  /* The progress codes that are a problem for the person to solve */
  const PROBLEMS = ["no_agent", "no_card", "untrusted", "pin_blocked", "cancelled", "expired",
    "webeid_version", "failed", "wrong_pin", "popup_blocked"];

  /* Put a card step's message in the page's status line (role=status): ``text``, and for a
   * blocked pop-up a link that opens the agent's PIN page in a new window. */
  function showStatus(element, text, code, detail) {
    element.textContent = text;
    element.classList.toggle("problem", PROBLEMS.indexOf(code) >= 0);
    if (detail && detail.pinUrl && detail.linkText) {
      const link = document.createElement("a");
      link.href = detail.pinUrl;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = detail.linkText;
      element.appendChild(document.createTextNode(" "));
      element.appendChild(link);
    }
  }

  /* What the person reads for a refused card: the page's own sentence and the reason code
   * (never the server's English description). */
  function refusalText(t, body) {
    let reason = body.reason;
    if (!reason && typeof body.error_description === "string") {
      const match = /\(reason: ([a-z_]+)\)\s*$/.exec(body.error_description);
      reason = match ? match[1] : null;
    }
    const specific = reason ? t("error.invalid_card." + reason) : null;
    const text = specific && specific !== "error.invalid_card." + reason ? specific : t("error.invalid_card");
    return reason ? text + " (" + reason + ")" : text;
  }

  window.authsvcCard = {
    authenticate: authenticate, openPinWindow: openPinWindow,
    showStatus: showStatus, refusalText: refusalText,
  };
})();
