// The card agent's PIN page. Loaded from the agent's own origin (no inline script: the page's
// Content-Security-Policy is "script-src 'self'").
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // After "Done" (or a cancel), the page closes itself: it was opened by the website's page.
  // Browsers only let a script close a window a script opened; otherwise the text says
  // "you can close this window".
  if (document.body.dataset.close === "1") {
    window.setTimeout(function () {
      window.close();
    }, 1500);
  }

  // One submission per click: a double click must not spend two PIN attempts.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent === "1") {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "1";
    });
  });
});
