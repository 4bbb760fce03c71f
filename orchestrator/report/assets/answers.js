"use strict";
// The answers list: every text from the log goes in with textContent, never as markup.
(function () {
  const data = JSON.parse(document.getElementById("answers-data").textContent);
  const n = data.jobs.length;
  const list = document.getElementById("answers-list");
  const search = document.getElementById("answers-search");
  const count = document.getElementById("answers-count");
  const SHOWN = 200;  // rows in the list at once; a search narrows the rest down
  let hay = null, timer = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function haystack(i) {
    if (hay === null) hay = new Array(n);
    if (hay[i] === undefined) {
      hay[i] = [data.jobs[i], data.prompt[i] || "", data.answer[i] || "", data.error[i] || ""]
        .join("\n").toLowerCase();
    }
    return hay[i];
  }

  function part(box, title, text) {
    box.append(el("div", "answer-part", title), el("pre", "answer-text", text));
  }

  function detail(i) {
    const box = el("div", "answer-detail");
    part(box, "prompt", data.prompt[i] ?? "(the rendered request is not in the log)");
    part(box, data.parsed[i] ? "parsed output" : "answer", data.answer[i] ?? "(no answer)");
    if (data.tools[i]) part(box, "tool calls", data.tools[i]);
    if (data.error[i]) part(box, "error", data.error[i]);
    return box;
  }

  function row(i) {
    const item = el("div", "answer");
    item.dataset.index = String(i);
    const head = el("button", "answer-head");
    head.type = "button";
    const status = el("span", "answer-status", data.status[i]);
    status.dataset.status = data.status[i];
    const preview = (data.answer[i] ?? data.error[i] ?? "").slice(0, 160).replace(/\s+/g, " ");
    head.append(el("span", "answer-id", data.jobs[i]), status, el("span", "answer-preview", preview));
    head.addEventListener("click", () => {
      const open = item.querySelector(".answer-detail");
      if (open) open.remove(); else item.append(detail(i));
      head.setAttribute("aria-expanded", open ? "false" : "true");
    });
    item.append(head);
    return item;
  }

  function show() {
    const q = search.value.trim().toLowerCase();
    const shown = [];
    let found = 0;
    for (let i = 0; i < n; i++) {
      if (q && !haystack(i).includes(q)) continue;
      if (found++ < SHOWN) shown.push(row(i));
    }
    list.replaceChildren(...shown);
    count.textContent = found === 0 ? "no job matches"
      : found + (q ? " matching" : "") + " job(s)" + (found > SHOWN ? ", the first " + SHOWN + " shown" : "");
    list.dataset.found = String(found);
    list.dataset.shown = String(shown.length);
  }

  // Open one job's answer: the list narrowed to it, its parts shown, scrolled into view.
  function openJob(job) {
    const i = data.jobs.indexOf(job);
    if (i < 0) return;
    search.value = job;
    show();
    const item = [...list.children].find((node) => node.dataset.index === String(i));
    if (!item) return;
    if (!item.querySelector(".answer-detail")) item.querySelector(".answer-head").click();
    item.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("orchestrator-open-job", (ev) => openJob(ev.detail));

  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(show, n > 2000 ? 150 : 0); });
  search.addEventListener("change", show);
  show();
  document.body.dataset.answersReady = "1";
})();
