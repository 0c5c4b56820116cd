/* dicom-node console: the buttons call the node's HTTP API; pages are rendered by the server. */
"use strict";

const Console = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  const TERMINAL = new Set(["done", "completed", "succeeded", "ready", "failed", "error", "cancelled", "canceled"]);

  /** fetch() with the session cookie and the CSRF header; resolves to {status, data, text}. */
  async function api(method, url, body) {
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    return { status: response.status, data, text };
  }

  function errorText(result) {
    const d = result.data;
    if (d && (d.error || d.message)) return d.error || d.message;
    return `HTTP ${result.status}`;
  }

  /** A route another part of the node adds may be missing here: 404 / 405 from the router. */
  function missingRoute(result) {
    return result.status === 405 || (result.status === 404 && !(result.data && result.data.error));
  }

  function toast(message, kind = "") {
    const box = document.getElementById("toasts");
    if (!box) return;
    const el = document.createElement("div");
    el.className = `toast ${kind}`;
    el.textContent = message;
    box.appendChild(el);
    setTimeout(() => el.remove(), 6000);
  }

  function confirmDialog(title, text, okLabel) {
    return new Promise((resolve) => {
      const back = document.createElement("div");
      back.className = "modal-back";
      back.innerHTML = `<div class="modal" role="dialog" aria-modal="true"><h2></h2><p></p>
        <div class="actions"><button class="btn" type="button" data-no>Cancel</button>
        <button class="btn danger solid" type="button" data-yes></button></div></div>`;
      back.querySelector("h2").textContent = title;
      back.querySelector("p").textContent = text;
      back.querySelector("[data-yes]").textContent = okLabel;
      const done = (answer) => { back.remove(); resolve(answer); };
      back.querySelector("[data-no]").addEventListener("click", () => done(false));
      back.querySelector("[data-yes]").addEventListener("click", () => done(true));
      back.addEventListener("click", (e) => { if (e.target === back) done(false); });
      document.body.appendChild(back);
      back.querySelector("[data-yes]").focus();
    });
  }

  /** How far a job got, 0..1, from the shapes job JSON takes (a number, {done,total}, counts). */
  function fraction(job) {
    if (!job) return 0;
    if (TERMINAL.has(job.state) && job.state !== "failed" && job.state !== "error") return 1;
    const p = job.progress;
    if (typeof p === "number") return p > 1 ? p / 100 : p;
    const pick = (o, keys) => keys.map((k) => o && o[k]).find((v) => typeof v === "number");
    const src = p && typeof p === "object" ? p : job;
    const done = pick(src, ["done", "completed", "sent", "received", "current"]);
    const total = pick(src, ["total", "expected", "count"]);
    return done !== undefined && total ? Math.min(1, done / total) : 0;
  }

  function progressText(job) {
    const p = job && typeof job.progress === "object" && job.progress ? job.progress : job || {};
    const done = ["done", "completed", "sent", "received"].map((k) => p[k]).find((v) => typeof v === "number");
    const total = ["total", "expected"].map((k) => p[k]).find((v) => typeof v === "number");
    if (done !== undefined && total !== undefined) return `${done} / ${total}`;
    if (typeof job?.progress === "number") return `${Math.round(fraction(job) * 100)} %`;
    return "";
  }

  function setBar(bar, value, bad) {
    if (!bar) return;
    bar.classList.toggle("bad", !!bad);
    bar.querySelector("span").style.width = `${(Math.max(0, Math.min(1, value)) * 100).toFixed(1)}%`;
  }

  function badge(state) {
    const kind = { ready: "ok", done: "ok", completed: "ok", succeeded: "ok", failed: "bad", error: "bad",
                   cancelled: "bad", canceled: "bad", queued: "", pending: "" }[state] ?? "info";
    const el = document.createElement("span");
    el.className = `badge ${kind}`;
    el.dataset.state = state;
    el.innerHTML = '<span class="dot"></span>';
    el.append(state);
    return el;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // -- page behaviour ---------------------------------------------------------------

  function clickableRows() {
    document.addEventListener("click", (e) => {
      const row = e.target.closest("tr[data-href]");
      if (!row || e.target.closest("a, button, input, select")) return;
      window.location.href = row.dataset.href;
    });
  }

  function thumbnails(root = document) {
    root.querySelectorAll("img[data-fallback]").forEach((img) => {
      const fallback = () => { img.classList.add("hidden"); img.nextElementSibling?.classList.remove("hidden"); };
      if (img.complete && img.naturalWidth === 0) fallback();
      else img.addEventListener("error", fallback, { once: true });
    });
  }

  /** Elements with data-refresh="ms" are re-read from the page's own URL while the tab is visible. */
  function liveRegions() {
    document.querySelectorAll("[data-refresh][id]").forEach((el) => schedule(el.id, +el.dataset.refresh));
  }

  function schedule(id, ms) {
    if (!ms) return;
    setTimeout(async () => {
      const current = document.getElementById(id);
      if (!current) return;
      if (document.hidden) return schedule(id, ms);
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (response.ok) {
          const doc = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = doc.getElementById(id);
          if (fresh) {
            current.querySelectorAll("[data-result]").forEach((old) => {
              const key = old.closest("[data-remote]")?.dataset.remote;
              const target = key && fresh.querySelector(`[data-remote="${CSS.escape(key)}"] [data-result]`);
              if (target) target.replaceWith(old);
            });
            current.replaceWith(fresh);
            thumbnails(fresh);
            return schedule(id, +(fresh.dataset.refresh || 0));
          }
        }
      } catch (e) { /* the node is restarting: try again later */ }
      schedule(id, ms);
    }, ms);
  }

  // -- actions ---------------------------------------------------------------------------

  const actions = {
    async "delete-study"(button) {
      const uid = button.dataset.study;
      const ok = await confirmDialog("Delete this study?",
        `${button.dataset.label}: every series, instance and file of it is removed from this node. This cannot be undone.`,
        "Delete study");
      if (!ok) return;
      const result = await api("DELETE", `/dicom-web/studies/${encodeURIComponent(uid)}`);
      if (result.status === 204 || result.status === 200) {
        window.location.href = "/?deleted=" + encodeURIComponent(uid);
      } else if (missingRoute(result)) {
        toast("This node cannot delete studies yet (no DELETE route).", "bad");
      } else {
        toast(`Delete failed: ${errorText(result)}`, "bad");
      }
    },

    async echo(button) {
      const card = button.closest(".card[data-remote]");
      const out = card.querySelector("[data-result]");
      out.className = "result note";
      out.textContent = "C-ECHO…";
      const result = await api("POST", `/remotes/${encodeURIComponent(button.dataset.remote)}/echo`);
      if (result.status === 200) {
        const d = result.data || {};
        const ms = ["round_trip_ms", "rtt_ms", "elapsed_ms", "ms"].map((k) => d[k]).find((v) => typeof v === "number");
        const s = ["round_trip_s", "rtt_s", "elapsed_s", "seconds"].map((k) => d[k]).find((v) => typeof v === "number");
        const time = ms !== undefined ? ms : s !== undefined ? s * 1000 : undefined;
        out.className = "result outcome ok";
        out.textContent = `C-ECHO answered${time !== undefined ? ` in ${time.toFixed(1)} ms` : ""}.`;
      } else if (missingRoute(result)) {
        out.textContent = "This node cannot C-ECHO from the console yet.";
      } else {
        out.className = "result outcome bad";
        out.textContent = `C-ECHO failed: ${errorText(result)}`;
      }
    },

    async retry(button) {
      const result = await api("POST", `/remotes/${encodeURIComponent(button.dataset.remote)}/retry`);
      if (result.status === 200) {
        toast(`${result.data.requeued} instance(s) queued again for ${result.data.remote}.`, "ok");
        button.disabled = true;
      } else {
        toast(`Retry failed: ${errorText(result)}`, "bad");
      }
    },

    async "prepare-zip"(button) {
      const card = document.getElementById("export");
      const accession = card.dataset.accession;
      button.disabled = true;
      try {
        for (;;) {
          const result = await api("POST", `/accessions/${encodeURIComponent(accession)}/zip`);
          const job = result.data && result.data.state ? result.data : null;
          showExport(card, job, result);
          if (result.status !== 202) break;
          await sleep(1000);
        }
      } finally {
        button.disabled = false;
      }
    },

    async "send-study"(button) {
      const remote = document.getElementById("send-remote").value;
      const uid = button.dataset.study;
      const message = document.getElementById("send-message");
      const line = document.getElementById("send-progress");
      button.disabled = true;
      try {
        const url = `/remotes/${encodeURIComponent(remote)}/store?StudyInstanceUID=${encodeURIComponent(uid)}`;
        const result = await api("POST", url);
        if (missingRoute(result)) { message.textContent = "This node cannot send studies yet."; return; }
        if (result.status !== 202 && result.status !== 200) {
          message.textContent = `Not sent: ${errorText(result)}`;
          return;
        }
        let job = result.data || {};
        line.classList.remove("hidden");
        while (job.id !== undefined && !TERMINAL.has(job.state)) {
          showSend(job);
          await sleep(1000);
          const next = await api("GET", `/jobs/${encodeURIComponent(job.id)}`);
          if (next.status !== 200) break;
          job = next.data;
        }
        showSend(job);
      } finally {
        button.disabled = false;
      }
    },
  };

  function showSend(job) {
    const line = document.getElementById("send-progress");
    const bad = job.state === "failed" || job.state === "error";
    setBar(line.querySelector(".bar"), fraction(job), bad);
    document.getElementById("send-figures").textContent = progressText(job);
    document.getElementById("send-message").textContent =
      `${job.state || "queued"}${job.message ? `: ${job.message}` : ""}`;
  }

  function showExport(card, job, result) {
    const message = document.getElementById("export-message");
    const download = document.getElementById("export-download");
    if (!job) {
      message.textContent = errorText(result);
      setBar(document.getElementById("export-bar"), 0, true);
      return;
    }
    card.dataset.state = job.state;
    const head = card.querySelector(".card-head");
    head.querySelector(".badge")?.remove();
    head.appendChild(badge(job.state));
    const ready = job.state === "ready";
    const value = ready ? 1 : job.expected ? job.received / job.expected : job.state === "zipping" ? 0.9 : 0.05;
    setBar(document.getElementById("export-bar"), value, job.state === "failed");
    document.getElementById("export-figures").textContent =
      `${job.instances} instances · ${(job.bytes / 1048576).toFixed(1)} MiB`;
    message.textContent = ready ? "Ready." : job.message || `${job.state}…`;
    download.classList.toggle("disabled", !ready);
  }

  // -- the jobs list (when the node serves GET /jobs) -------------------------------------

  async function jobsList() {
    const box = document.querySelector("[data-jobs-api]");
    if (!box) return;
    const rows = document.getElementById("jobs-rows");
    for (;;) {
      const result = await api("GET", box.dataset.jobsApi).catch(() => null);
      if (result && result.status === 200) {
        const jobs = Array.isArray(result.data) ? result.data : result.data?.jobs || [];
        rows.replaceChildren(...(jobs.length ? jobs.map(jobRow) : [emptyRow()]));
        document.getElementById("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      } else if (result) {
        rows.replaceChildren(emptyRow(`Jobs cannot be listed: ${errorText(result)}`));
      }
      await sleep(2000);
    }
  }

  function emptyRow(text = "No job yet.") {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    td.className = "muted";
    td.textContent = text;
    tr.appendChild(td);
    return tr;
  }

  function jobRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const cell = (content, cls = "") => {
      const td = document.createElement("td");
      td.className = cls;
      if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "—";
      tr.appendChild(td);
      return td;
    };
    cell(String(job.id), "mono");
    cell(job.kind);
    cell(badge(job.state || "queued"));
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = "<span></span>";
    setBar(bar, fraction(job), job.state === "failed");
    const td = cell(bar);
    const sub = document.createElement("div");
    sub.className = "cell-sub";
    sub.textContent = progressText(job);
    td.appendChild(sub);
    cell(job.message || "—", job.state === "failed" ? "outcome bad" : "");
    cell(job.updated_at || job.created_at || "—", "nowrap faint");
    return tr;
  }

  function bindActions() {
    document.addEventListener("click", (e) => {
      const button = e.target.closest("[data-action]");
      if (!button || !(button.dataset.action in actions)) return;
      e.preventDefault();
      actions[button.dataset.action](button).catch((err) => toast(`Failed: ${err.message || err}`, "bad"));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    clickableRows();
    thumbnails();
    liveRegions();
    bindActions();
    jobsList();
    const exp = document.getElementById("export");
    if (exp && ["queued", "retrieving", "zipping"].includes(exp.dataset.state)) {
      exp.querySelector('[data-action="prepare-zip"]')?.click();
    }
  });

  return { api, toast, setBar, errorText };
})();
