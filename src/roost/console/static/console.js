/* Roost console behaviour: changes go to the API itself, with the session's CSRF token.
 *
 *   <form data-api="/api/v1/devices" data-method="POST" data-then="go:/devices/{id}">
 *     <input name="name">  <input name="tags" data-type="list">  <textarea name="attributes" data-type="json">
 *   </form>
 *   <button data-api="/api/v1/jobs/j1/cancel" data-method="POST" data-confirm="Cancel job?" data-then="reload">
 *
 * Field types (data-type): text (default), int, float, bool (checkbox), json, list (commas or lines),
 * time (a datetime-local value sent as RFC 3339 UTC), pairs ("key=value" items as an object). A dotted name ("rollout.rate") makes nested
 * objects (a numeric part, "abort.0.failure_type", makes a list); a <select multiple> sends a list
 * of its chosen values. Empty fields are left out unless data-empty="null" (sends null) or "keep" ("").
 * data-then: reload | go:/path/{field of the answer} | event:name | none.
 * data-collect="select" on a form adds the values of the checked <input name="select"> boxes as the
 * field named by data-collect-as (a list). A failed call shows the API's problem in the form's
 * [data-problem] element (or a toast): its detail and each field error.
 */
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function toast(text, ms) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(el._timer);
    el._timer = setTimeout(() => { el.hidden = true; }, ms || 3500);
  }

  function setPath(target, path, value) {
    const parts = path.split(".");
    let node = target;
    for (let i = 0; i < parts.length - 1; i++) {
      // A numeric next part ("abort.0.failure_type") makes a list (jobs' abort and retry rules).
      if (typeof node[parts[i]] !== "object" || node[parts[i]] === null) node[parts[i]] = /^\d+$/.test(parts[i + 1]) ? [] : {};
      node = node[parts[i]];
    }
    node[parts[parts.length - 1]] = value;
  }

  class FieldError extends Error {
    constructor(field, message) { super(message); this.field = field; }
  }

  function fieldValue(el) {
    const type = el.dataset.type || "text";
    if (type === "bool") return el.checked;
    // <select multiple>: the chosen values as a list (none chosen: left out).
    if (el.type === "select-multiple") {
      const chosen = Array.from(el.selectedOptions).map((o) => o.value);
      return chosen.length ? chosen : undefined;
    }
    const raw = el.value;
    if (raw === "" || raw === undefined) {
      if (el.dataset.empty === "null") return null;
      if (el.dataset.empty === "keep") return "";
      return undefined;
    }
    switch (type) {
      case "int": {
        const n = Number(raw);
        if (!Number.isInteger(n)) throw new FieldError(el.name, "must be a whole number");
        return n;
      }
      case "float": {
        const n = Number(raw);
        if (!Number.isFinite(n)) throw new FieldError(el.name, "must be a number");
        return n;
      }
      case "json":
        try { return JSON.parse(raw); } catch (e) { throw new FieldError(el.name, "is not valid JSON: " + e.message); }
      case "list":
        return raw.split(/[\n,]/).map((s) => s.trim()).filter((s) => s.length);
      case "pairs": {
        // "key=value" items (commas or lines) as an object, e.g. tags: store=berlin, floor=2.
        const out = {};
        for (const item of raw.split(/[\n,]/).map((s) => s.trim()).filter((s) => s.length)) {
          const at = item.indexOf("=");
          if (at < 1) throw new FieldError(el.name, "must be key=value items, not " + JSON.stringify(item));
          out[item.slice(0, at).trim()] = item.slice(at + 1).trim();
        }
        return out;
      }
      case "time": {
        const d = new Date(raw.endsWith("Z") || /[+-]\d\d:\d\d$/.test(raw) ? raw : raw + "Z");
        if (isNaN(d)) throw new FieldError(el.name, "is not a time");
        return d.toISOString();
      }
      default:
        return raw;
    }
  }

  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.name === "select" || el.dataset.skip !== undefined) continue;
      if ((el.type === "checkbox" && el.dataset.type !== "bool") || el.type === "radio") {
        if (!el.checked) continue;
      }
      if (el.type === "submit" || el.type === "button") continue;
      const value = fieldValue(el);
      if (value !== undefined) setPath(body, el.name, value);
    }
    if (form.dataset.collect) {
      const picked = Array.from(document.querySelectorAll('input[name="' + form.dataset.collect + '"]:checked')).map((b) => b.value);
      setPath(body, form.dataset.collectAs || "ids", picked);
    }
    return body;
  }

  function showProblem(host, problem) {
    const box = host && host.querySelector("[data-problem]");
    const lines = [];
    let text = problem.detail || problem.title || "the request failed";
    if (problem.title && problem.detail) text = problem.title + ": " + problem.detail;
    for (const err of problem.errors || []) {
      const where = Array.isArray(err.loc) ? err.loc.filter((p) => p !== "body").join(".") : (err.field || err.pointer || "");
      lines.push((where ? where + ": " : "") + (err.msg || err.detail || err.message || JSON.stringify(err)));
    }
    if (!box) { toast(text + (lines.length ? " — " + lines.join("; ") : ""), 8000); return; }
    box.textContent = text;
    if (lines.length) {
      const ul = document.createElement("ul");
      for (const l of lines) { const li = document.createElement("li"); li.textContent = l; ul.appendChild(li); }
      box.appendChild(ul);
    }
    box.hidden = false;
  }

  function clearProblem(host) {
    const box = host && host.querySelector("[data-problem]");
    if (box) { box.hidden = true; box.textContent = ""; }
  }

  async function callApi(method, url, body, extraHeaders) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf() };
    Object.assign(headers, extraHeaders || {});
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined && method !== "GET" && method !== "DELETE") {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    const text = await resp.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = { detail: text }; } }
    if (!resp.ok) {
      const problem = data && typeof data === "object" ? data : {};
      if (!problem.detail) problem.detail = resp.status + " " + resp.statusText;
      problem.status = resp.status;
      throw problem;
    }
    return data;
  }

  function fill(template, data) {
    return template.replace(/\{([\w.]+)\}/g, (_, key) => {
      let v = data;
      for (const k of key.split(".")) v = v == null ? v : v[k];
      return v == null ? "" : encodeURIComponent(String(v));
    });
  }

  function after(el, data) {
    const then = el.dataset.then || "reload";
    if (el.dataset.done) toast(el.dataset.done);
    if (then === "reload") { window.location.reload(); return; }
    if (then.startsWith("go:")) { window.location.assign(fill(then.slice(3), data || {})); return; }
    if (then.startsWith("event:")) {
      document.dispatchEvent(new CustomEvent(then.slice(6), { detail: { source: el, data } }));
    }
  }

  function headersOf(el) {
    const extra = {};
    if (el.dataset.ifMatch) extra["If-Match"] = el.dataset.ifMatch;
    return extra;
  }

  async function submitForm(form, submitter) {
    clearProblem(form);
    let body;
    try {
      body = form.dataset.body ? JSON.parse(form.dataset.body) : formBody(form);
    } catch (e) {
      showProblem(form, { title: "Invalid input", detail: (e.field ? e.field + " " : "") + e.message });
      return;
    }
    if (form.dataset.wrap) body = { [form.dataset.wrap]: body };
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const method = (form.dataset.method || "POST").toUpperCase();
    // A {name} in data-api is the value of the form's field of that name (mark it data-skip).
    let url = form.dataset.api.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent((form.elements[k] || {}).value || ""));
    if (method === "GET" || method === "DELETE") {
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries(body)) if (v !== null && v !== undefined) query.append(k, v);
      if ([...query].length) url += (url.includes("?") ? "&" : "?") + query;
    }
    if (submitter) submitter.disabled = true;
    try {
      const data = await callApi(method, url, body, headersOf(form));
      after(form, data);
    } catch (problem) {
      if (problem instanceof Error) problem = { detail: problem.message };
      showProblem(form, problem);
    } finally {
      if (submitter) submitter.disabled = false;
    }
  }

  async function clickButton(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const host = button.closest("[data-problem-host]") || button.closest("form") || document;
    clearProblem(host);
    button.disabled = true;
    try {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const data = await callApi((button.dataset.method || "POST").toUpperCase(), button.dataset.api, body, headersOf(button));
      after(button, data);
    } catch (problem) {
      if (problem instanceof Error) problem = { detail: problem.message };
      showProblem(host === document ? null : host, problem);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.dataset.api === undefined) return;
    event.preventDefault();
    submitForm(form, event.submitter);
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("button[data-api]");
    if (!button || button.form && button.type === "submit" && button.form.dataset.api !== undefined) return;
    event.preventDefault();
    clickButton(button);
  });

  // "Select all" boxes: <input type="checkbox" data-select-all="select">.
  document.addEventListener("change", (event) => {
    const all = event.target.closest && event.target.closest("input[data-select-all]");
    if (all) {
      for (const box of document.querySelectorAll('input[name="' + all.dataset.selectAll + '"]')) box.checked = all.checked;
    }
    const count = document.querySelectorAll('input[name="select"]:checked').length;
    for (const out of document.querySelectorAll("[data-selected-count]")) out.textContent = count;
  });

  // htmx requests (fragments that poll or swap) carry the CSRF token too.
  document.addEventListener("htmx:configRequest", (event) => { event.detail.headers["X-CSRF-Token"] = csrf(); });

  window.Roost = { api: callApi, toast, showProblem, clearProblem, csrf };
})();
