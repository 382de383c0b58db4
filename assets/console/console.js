// The switchyard console's one script: live updates of the app page's
// deploy progress over Server-Sent Events. Pages work without it (a
// refresh link shows the same). Text only: nothing is parsed as HTML.
"use strict";
(function () {
  var section = document.getElementById("progress");
  if (!section || !window.EventSource) { return; }
  var url = section.getAttribute("data-events");
  if (!url) { return; }
  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }
  function render(p) {
    var none = document.getElementById("progress-none");
    if (none && p.progress) { window.location.reload(); return; }
    if (p.live !== undefined) { setText("live", p.live); }
    if (p.lifecycle !== undefined) { setText("lifecycle", p.lifecycle); }
    if (!p.progress) { return; }
    var d = p.progress;
    setText("progress-id", d.op + " " + d.id + (d.to ? " \u2192 " + d.to : ""));
    setText("progress-state", d.state);
    setText("progress-step", d.step);
    setText("progress-error", d.error || "");
    var box = document.getElementById("progress-hooks");
    if (!box) { return; }
    while (box.firstChild) { box.removeChild(box.firstChild); }
    d.hooks.forEach(function (h) {
      var title = document.createElement("h3");
      title.textContent = h.hook;
      var pre = document.createElement("pre");
      pre.className = "hook-tail";
      pre.setAttribute("data-hook", h.hook);
      pre.textContent = h.tail;
      box.appendChild(title);
      box.appendChild(pre);
    });
  }
  var es = new EventSource(url);
  es.addEventListener("progress", function (e) {
    try { render(JSON.parse(e.data)); } catch (err) { /* a partial event: the next one repairs it */ }
  });
})();
