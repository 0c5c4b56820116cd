/* Upload page: files and folders -> one STOW-RS request per file (POST /dicom-web/studies). */
"use strict";

(() => {
  const PARALLEL = 3;
  const queue = [];
  let running = 0;
  const totals = { files: 0, bytes: 0, sentBytes: 0, stored: 0, warned: 0, failed: 0, done: 0 };
  const studies = new Map(); // study UID -> instances stored

  const $ = (id) => document.getElementById(id);
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  function human(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let n = bytes;
    let u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u += 1; }
    return u ? `${n.toPrecision(3)} ${units[u]}` : `${n} B`;
  }

  /** Every file under a dropped entry (folders read recursively, in batches as the API gives them). */
  async function filesOf(entry, path = "") {
    if (entry.isFile) {
      return new Promise((resolve) => entry.file((f) => resolve([{ file: f, name: path + f.name }]), () => resolve([])));
    }
    if (!entry.isDirectory) return [];
    const reader = entry.createReader();
    const out = [];
    for (;;) {
      const batch = await new Promise((resolve) => reader.readEntries(resolve, () => resolve([])));
      if (!batch.length) break;
      for (const child of batch) out.push(...(await filesOf(child, `${path}${entry.name}/`)));
    }
    return out;
  }

  function add(items) {
    if (!items.length) return;
    $("upload-card").classList.remove("hidden");
    const rows = $("upload-rows");
    for (const item of items) {
      const tr = document.createElement("tr");
      tr.innerHTML = `<td class="mono"></td><td class="num"></td>
        <td><div class="bar"><span style="width: 0%"></span></div></td><td class="outcome">waiting</td>`;
      tr.children[0].textContent = item.name;
      tr.children[1].textContent = human(item.file.size);
      rows.appendChild(tr);
      item.row = tr;
      item.sent = 0;
      queue.push(item);
      totals.files += 1;
      totals.bytes += item.file.size;
    }
    summary();
    pump();
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      running += 1;
      send(queue.shift()).finally(() => { running -= 1; pump(); summary(); });
    }
  }

  function send(item) {
    return new Promise((resolve) => {
      const boundary = `dicom-node-${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`;
      const head = `--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`;
      const body = new Blob([head, item.file, `\r\n--${boundary}--\r\n`]);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/dicom-web/studies");
      xhr.setRequestHeader("Content-Type", `multipart/related; type="application/dicom"; boundary=${boundary}`);
      xhr.setRequestHeader("Accept", "application/dicom+json");
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      const bar = item.row.querySelector(".bar");
      const outcome = item.row.querySelector(".outcome");
      outcome.textContent = "sending…";
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const sent = Math.min(item.file.size, e.loaded);
        totals.sentBytes += sent - item.sent;
        item.sent = sent;
        bar.querySelector("span").style.width = `${((100 * e.loaded) / e.total).toFixed(1)}%`;
        summary();
      });
      xhr.addEventListener("load", () => { judge(item, xhr.status, xhr.responseText); resolve(); });
      xhr.addEventListener("error", () => { totals.done += 1; fail(item, "the connection failed"); resolve(); });
      xhr.send(body);
    });
  }

  function first(item, tag) {
    const el = item && item[tag];
    return el && el.Value ? el.Value[0] : undefined;
  }

  /** The per-file outcome from the Store Instances Response (PS3.18 10.5.3). */
  function judge(item, status, text) {
    totals.sentBytes += item.file.size - item.sent;
    item.sent = item.file.size;
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    const outcome = item.row.querySelector(".outcome");
    const bar = item.row.querySelector(".bar");
    bar.querySelector("span").style.width = "100%";
    totals.done += 1;
    const referenced = body?.["00081199"]?.Value || [];
    const failed = body?.["00081198"]?.Value || [];
    if ((status === 200 || status === 202) && referenced.length) {
      const warnings = referenced.flatMap((r) => r["00081196"]?.Value || []);
      const url = first(referenced[0], "00081190") || "";
      const match = url.match(/\/studies\/([^/]+)/);
      if (match) studies.set(match[1], (studies.get(match[1]) || 0) + referenced.length);
      if (warnings.length) {
        totals.warned += 1;
        outcome.className = "outcome warn";
        outcome.textContent = `stored, warning 0x${warnings[0].toString(16).toUpperCase().padStart(4, "0")}`;
      } else {
        totals.stored += 1;
        outcome.className = "outcome ok";
        outcome.textContent = referenced.length > 1 ? `stored (${referenced.length} instances)` : "stored";
      }
      return;
    }
    if (failed.length) {
      const reason = first(failed[0], "00081197");
      const comment = first(failed[0], "00000902");
      const code = reason !== undefined ? `0x${reason.toString(16).toUpperCase().padStart(4, "0")}` : "";
      return fail(item, [code, comment].filter(Boolean).join(": ") || `HTTP ${status}`);
    }
    fail(item, (body && body.error) || `HTTP ${status}`);
  }

  function fail(item, reason) {
    totals.failed += 1;
    const outcome = item.row.querySelector(".outcome");
    outcome.className = "outcome bad";
    outcome.textContent = reason;
    item.row.querySelector(".bar").classList.add("bad");
  }

  function summary() {
    const waiting = totals.files - totals.done;
    $("count-queued").textContent = `${waiting} waiting`;
    $("count-stored").textContent = `${totals.stored} stored`;
    $("count-warned").textContent = `${totals.warned} with warnings`;
    $("count-failed").textContent = `${totals.failed} failed`;
    const fraction = totals.bytes ? totals.sentBytes / totals.bytes : 0;
    $("total-bar").querySelector("span").style.width = `${(100 * fraction).toFixed(1)}%`;
    $("total-figures").textContent = `${totals.done} / ${totals.files} files · ${human(totals.sentBytes)} of ${human(totals.bytes)}`;
    const list = $("studies-received");
    list.replaceChildren();
    if (studies.size) {
      list.append("Studies received: ");
      [...studies].forEach(([uid, n], i) => {
        if (i) list.append(", ");
        const a = document.createElement("a");
        a.href = `/console/studies/${encodeURIComponent(uid)}`;
        a.textContent = `${uid.length > 28 ? `…${uid.slice(-24)}` : uid} (${n})`;
        list.appendChild(a);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const drop = $("drop");
    const files = $("pick-files");
    const folder = $("pick-folder");
    $("choose-files").addEventListener("click", (e) => { e.preventDefault(); files.click(); });
    $("choose-folder").addEventListener("click", (e) => { e.preventDefault(); folder.click(); });
    for (const input of [files, folder]) {
      input.addEventListener("change", () => {
        add([...input.files].map((f) => ({ file: f, name: f.webkitRelativePath || f.name })));
        input.value = "";
      });
    }
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", async (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const entries = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
      if (entries.length) {
        const found = [];
        for (const entry of entries) found.push(...(await filesOf(entry)));
        add(found);
      } else {
        add([...e.dataTransfer.files].map((f) => ({ file: f, name: f.name })));
      }
    });
  });
})();
