/* The schedule form's live preview: asks the admin for the next five run times. */
"use strict";
(function () {
  function value(name) {
    const checked = document.querySelector('input[name="' + name + '"]:checked');
    if (checked) { return checked.value; }
    const field = document.querySelector('[name="' + name + '"]');
    return field ? field.value : "";
  }

  function render(box, data) {
    box.replaceChildren();
    if (data.error) {
      const error = document.createElement("p");
      error.className = "errornote";
      error.textContent = data.error;
      box.append(error);
      return;
    }
    const list = document.createElement("ul");
    list.className = "pq-preview";
    for (const run of data.runs) {
      const item = document.createElement("li");
      item.textContent = run;
      list.append(item);
    }
    box.append(list);
  }

  function refresh(box) {
    const params = new URLSearchParams();
    for (const name of ["timing", "every", "unit", "cron", "timezone"]) {
      params.set(name, value(name));
    }
    fetch(box.dataset.url + "?" + params.toString(), {credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (data) { render(box, data); })
      .catch(function () { /* keep the last preview */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const box = document.getElementById("pq-preview");
    if (!box) { return; }
    let timer = null;
    const schedule = function () { clearTimeout(timer); timer = setTimeout(function () { refresh(box); }, 250); };
    for (const name of ["timing", "every", "unit", "cron", "timezone"]) {
      for (const field of document.querySelectorAll('[name="' + name + '"]')) {
        field.addEventListener("input", schedule);
        field.addEventListener("change", schedule);
      }
    }
    // A saved schedule's page starts with its real next runs; a new one asks at once.
    if (!box.querySelector("li")) { refresh(box); }
  });
})();
