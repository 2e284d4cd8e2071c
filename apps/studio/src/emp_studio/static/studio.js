// EMP Studio: the little the server cannot do. Everything works without it except these niceties:
// local times, the JSON editor's live check, requirement rows, the live-connection badge, notices
// and the LoRA upload's progress bar.
(function () {
  "use strict";

  // --- times: the server writes UTC; show the reader's own clock ---------------------------------
  var rtf = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

  function ago(date) {
    var s = (Date.now() - date.getTime()) / 1000;
    if (s < 5) return "just now";
    if (!rtf) return null;
    var units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
    for (var i = 0; i < units.length; i++) {
      if (s >= units[i][1] || units[i][0] === "second") {
        return rtf.format(-Math.floor(s / units[i][1]), units[i][0]);
      }
    }
    return null;
  }

  function localise(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      var kind = el.getAttribute("data-local");
      el.textContent = kind === "time" ? date.toLocaleTimeString()
        : kind === "date" ? date.toLocaleDateString() : date.toLocaleString();
      el.title = date.toISOString();
    });
    root.querySelectorAll("time[data-age]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      var text = isNaN(date) ? null : ago(date);
      if (text) el.textContent = text;
    });
  }

  // --- the payload editor: say at once whether the JSON parses ----------------------------------
  function checkJson(textarea, typed) {
    var status = document.querySelector('[data-json-status="' + textarea.id + '"]');
    if (!status) return null;
    if (!status.dataset.hint) status.dataset.hint = status.innerHTML;
    var text = textarea.value.trim();
    if (!text) {
      status.innerHTML = status.dataset.hint;
      status.className = "hint json-status";
      return {};
    }
    try {
      var value = JSON.parse(text);
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new Error("it must be a JSON object, like {\"steps\": 20}");
      }
      status.textContent = "✓ Valid JSON object with " + Object.keys(value).length + " field(s).";
      status.className = "hint json-status ok";
      if (typed) textarea.removeAttribute("aria-invalid");
      return value;
    } catch (err) {
      status.textContent = "✗ Not valid yet: " + err.message;
      status.className = "hint json-status bad";
      return null;
    }
  }

  document.addEventListener("input", function (e) {
    if (e.target.matches && e.target.matches("[data-json-editor]")) checkJson(e.target, true);
  });

  // --- clicks: format JSON, add and remove requirement rows, dismiss notices --------------------
  document.addEventListener("click", function (e) {
    var target = e.target.closest ? e.target.closest("button") : null;
    if (!target) return;
    if (target.hasAttribute("data-format-json")) {
      var area = document.getElementById(target.getAttribute("data-format-json"));
      var value = area && checkJson(area, true);
      if (value) area.value = JSON.stringify(value, null, 2);
    } else if (target.hasAttribute("data-add-row")) {
      var rows = target.previousElementSibling;
      var last = rows && rows.lastElementChild;
      if (!last) return;
      var copy = last.cloneNode(true);
      copy.querySelectorAll("input").forEach(function (input) { input.value = ""; });
      rows.appendChild(copy);
      copy.querySelector("input").focus();
    } else if (target.hasAttribute("data-remove-row")) {
      var row = target.closest(".cap-row");
      if (row.parentElement.children.length > 1) row.remove();
      else row.querySelectorAll("input").forEach(function (input) { input.value = ""; });
    } else if (target.hasAttribute("data-dismiss")) {
      target.closest(".notice").remove();
    }
  });

  // --- notices: errors of htmx requests arrive in #notices; they leave by themselves ------------
  function notify(title, message) {
    var box = document.getElementById("notices");
    if (!box) return;
    var div = document.createElement("div");
    div.className = "notice";
    div.setAttribute("role", "alert");
    div.setAttribute("data-testid", "notice");
    div.innerHTML = '<div><strong></strong><p></p></div><button type="button" class="notice-close" data-dismiss aria-label="Dismiss">×</button>';
    div.querySelector("strong").textContent = title;
    div.querySelector("p").textContent = message;
    box.appendChild(div);
  }

  new MutationObserver(function (changes) {
    changes.forEach(function (change) {
      change.addedNodes.forEach(function (node) {
        if (node.nodeType === 1 && node.classList.contains("notice")) {
          setTimeout(function () { node.remove(); }, 8000);
        }
      });
    });
  }).observe(document.documentElement, { childList: true, subtree: true });

  document.addEventListener("htmx:sendError", function () {
    notify("The studio is not answering", "Check your connection; the page retries by itself.");
  });

  // --- live pages: show whether the WebSocket is connected --------------------------------------
  function liveState(elt, state, label) {
    var scope = elt.closest("[ws-connect]") || elt;
    scope.querySelectorAll("[data-live-status]").forEach(function (badge) {
      badge.setAttribute("data-state", state);
      badge.querySelector(".live-label").textContent = label;
    });
  }

  document.addEventListener("htmx:wsOpen", function (e) { liveState(e.target, "live", "Live"); });
  document.addEventListener("htmx:wsClose", function (e) {
    var code = e.detail && e.detail.event ? e.detail.event.code : 0;
    // 1000: the server finished (the job ended); anything else and the extension reconnects.
    if (code === 1000) liveState(e.target, "done", "Up to date");
    else liveState(e.target, "reconnecting", "Reconnecting…");
  });

  // --- LoRA upload: send the file with XMLHttpRequest for its progress events --------------------
  // Without script the form posts as usual; with it, the bar fills as the bytes leave, then the
  // page reloads with the server's notice, or the error it named stays beside the form.
  function sizeText(bytes) {
    var units = ["B", "kB", "MB", "GB"], i = 0;
    while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i++; }
    return (i ? bytes.toPrecision(3) : bytes) + " " + units[i];
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches || !form.matches("form[data-upload]") || !window.FormData) return;
    e.preventDefault();
    var file = form.querySelector("input[type=file]");
    var box = form.querySelector("[data-upload-progress]");
    var bar = box.querySelector("progress");
    var status = box.querySelector("[data-upload-status]");
    var error = form.querySelector("[data-upload-error]");
    var button = form.querySelector("button[type=submit]");
    error.hidden = true;
    if (!file.files.length) { error.textContent = "Choose a .safetensors file first."; error.hidden = false; return; }
    var total = file.files[0].size;
    box.hidden = false; bar.value = 0; bar.removeAttribute("data-done");
    button.disabled = true;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    var csrf = form.querySelector("input[name=csrf_token]");
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf.value);
    xhr.upload.addEventListener("progress", function (p) {
      if (!p.lengthComputable) return;
      var pct = Math.min(100, Math.floor(100 * p.loaded / p.total));
      bar.value = pct;
      status.textContent = pct + "% · " + sizeText(Math.min(p.loaded, total)) + " of " + sizeText(total);
    });
    xhr.upload.addEventListener("load", function () { status.textContent = "Checking the file…"; });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        bar.value = 100; bar.setAttribute("data-done", "true");
        window.location = "/loras?notice=" + encodeURIComponent(body.message || "Uploaded.");
        return;
      }
      button.disabled = false; box.hidden = true;
      error.textContent = body && body.error ? body.error.message : "The upload failed (" + xhr.status + ").";
      error.hidden = false;
    });
    xhr.addEventListener("error", function () {
      button.disabled = false; box.hidden = true;
      error.textContent = "The upload was interrupted: check your connection and try again.";
      error.hidden = false;
    });
    xhr.send(new FormData(form));
  });

  document.addEventListener("htmx:afterSettle", function (e) { localise(e.target); });
  document.addEventListener("htmx:wsAfterMessage", function () { localise(document); });
  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    document.querySelectorAll("[data-json-editor]").forEach(function (t) { checkJson(t, false); });
    setInterval(function () { localise(document); }, 15000);
  });
})();
