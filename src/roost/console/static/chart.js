/* RoostChart: a sensor's telemetry as a uPlot chart, read from the API and kept live.
 *
 *   <div class="chart" data-kind="line" data-unit="°C" data-label="Temperature"></div>
 *   const stream = RoostChart.stream({ device: "d1", kind: "telemetry" });   // one socket a page
 *   RoostChart.indicate(document.querySelector("[data-live-status]"), stream);
 *   const chart = RoostChart.mount(element, { device: "d1", sensor: "temp", range: { last: "1h" }, stream });
 *
 * range: { last: "1h" | "1d" | "7d" | "<n><s|m|h|d|w>" } (a window sliding with now, kept live when a
 *        stream is given) or { from, to } (anything the API's from/to take; a time without an
 *        offset is UTC, as the API reads it). Omitted: the last hour.
 * kind:  "line" (numbers: a line, or an avg line in a min–max band for aggregates) or "list" (the
 *        newest values of a text/boolean/json sensor as a table). Default: the element's data-kind.
 *
 * What is asked of the API (GET /api/v1/devices/{id}/telemetry, the page's cookie authenticates it):
 * raw points for ranges up to RAW_MAX_RANGE_S, unless there are more than RAW_LIMIT of them; else
 * agg=avg,min,max,count with an interval chosen from the range (RoostChart.bucketFor), so a series
 * never brings more than a few thousand points to the browser. A failed request shows the API's
 * problem in the element.
 *
 * After every draw the element carries what it drew, for tests and benchmarks:
 *   data-state="loading|ready|empty|error"  data-mode="raw|aggregate"  data-interval="15m"
 *   data-points (points or buckets drawn)  data-last-value / data-last-ts (the newest drawn)
 *   data-drawn-at (Date.now() when the canvas was drawn)
 * The element's aria-describedby target (or options.summary) gets a one-line text summary.
 *
 * RoostChart.stream({device, kind, sensor, event}) opens (once per query) the live WebSocket
 * /api/v1/ws/stream, reconnecting with back-off; .listen(onItem, onResync) hears its items and
 * when items may have been missed (a reconnect, a {"dropped": n} frame); .watch(onState) hears
 * connecting / live / reconnecting.
 */
(function () {
  "use strict";

  // Ranges up to this long are drawn from raw points (one hour of a 1 Hz sensor is 3,600)…
  const RAW_MAX_RANGE_S = 3600;
  // …unless they hold more than this many points: then aggregates, as for longer ranges.
  const RAW_LIMIT = 4000;
  // An aggregate chart has about this many buckets at most: a point per pixel of a wide chart.
  const TARGET_BUCKETS = 1000;
  // Bucket widths an aggregate may use (seconds): calendar-friendly steps, weeks start on Mondays.
  const INTERVALS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400, 604800, 2419200];
  // Rows a "list" sensor shows: the newest values, enough to read without scrolling far.
  const LIST_ROWS = 50;
  // Back-off between reconnects of the live stream (the last value repeats).
  const RECONNECT_MS = [500, 1000, 2000, 5000, 10000];
  // How often a sliding window moves on when no point arrives.
  const SLIDE_MS = 15000;
  const CHART_HEIGHT = 240;
  const UNIT_S = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  // Week buckets start on Mondays: the first Monday after the epoch (1970-01-05).
  const FIRST_MONDAY_S = 345600;
  const COLORS = { line: "#1f6feb", band: "rgba(31,111,235,0.14)", edge: "rgba(31,111,235,0.35)" };

  /** "1h" → 3600 (seconds); NaN for anything else. */
  function durationS(text) {
    const m = /^(\d+)\s*([smhdw])$/.exec(String(text || "").trim());
    return m ? Number(m[1]) * UNIT_S[m[2]] : NaN;
  }

  /** A bucket width (seconds) for a range: the smallest step giving at most TARGET_BUCKETS. */
  function bucketFor(rangeS) {
    const wanted = rangeS / TARGET_BUCKETS;
    return INTERVALS_S.find((s) => s >= wanted) || INTERVALS_S[INTERVALS_S.length - 1];
  }

  /** 900 → "15m": the API's interval form. */
  function intervalText(s) {
    if (s % 604800 === 0) return s / 604800 + "w";
    if (s % 86400 === 0) return s / 86400 + "d";
    if (s % 3600 === 0) return s / 3600 + "h";
    if (s % 60 === 0) return s / 60 + "m";
    return s + "s";
  }

  /** A from/to value as epoch seconds (no offset: UTC, as the API reads it); NaN if unknown. */
  function instantS(text) {
    if (!text) return NaN;
    const t = String(text).trim();
    if (/^\d{4}-\d\d-\d\d(T[\d:.]+)?$/.test(t)) return Date.parse(t.length === 10 ? t + "T00:00:00Z" : t + "Z") / 1000;
    if (/^\d{4}-\d\d-\d\dT/.test(t)) return Date.parse(t) / 1000;
    return NaN;
  }

  /** "2026-12-07 05:10:58Z", as the console writes times. */
  function when(seconds) {
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function formatValue(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }

  async function getJson(url) {
    const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
    if (!resp.ok) {
      const problem = data && typeof data === "object" ? data : {};
      if (!problem.detail) problem.detail = resp.status + " " + resp.statusText;
      throw problem;
    }
    return data;
  }

  /** Index of the first row whose x is >= x (rows sorted by x). */
  function lowerBound(xs, x) {
    let lo = 0, hi = xs.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
  }

  // -- the live stream --------------------------------------------------------------------------

  class Stream {
    constructor(url) {
      this.url = url;
      this.state = "connecting";
      this.items = new Set();
      this.resyncs = new Set();
      this.states = new Set();
      this.attempt = 0;
      this.opened = false;
      this.connect();
    }

    connect() {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => {
        this.attempt = 0;
        const again = this.opened;
        this.opened = true;
        this.set("live");
        if (again) this.resync();  // what came while we were away is read again
      };
      ws.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        if (frame.dropped) this.resync();
        for (const item of frame.items || []) for (const hear of this.items) hear(item);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.set("reconnecting");
        const wait = RECONNECT_MS[Math.min(this.attempt++, RECONNECT_MS.length - 1)];
        setTimeout(() => this.connect(), wait);
      };
    }

    set(state) {
      this.state = state;
      for (const hear of this.states) hear(state);
    }

    resync() { for (const hear of this.resyncs) hear(); }

    /** Hear each live item, and when items may have been missed; answers an unsubscribe. */
    listen(onItem, onResync) {
      this.items.add(onItem);
      if (onResync) this.resyncs.add(onResync);
      return () => { this.items.delete(onItem); this.resyncs.delete(onResync); };
    }

    /** Hear the connection's state now and at each change. */
    watch(onState) {
      this.states.add(onState);
      onState(this.state);
      return () => this.states.delete(onState);
    }
  }

  const streams = new Map();

  /** The page's live stream for this query (one socket per distinct query). */
  function stream(query) {
    const q = new URLSearchParams();
    for (const key of ["device", "sensor", "event"]) {
      for (const v of [].concat(query[key] || [])) q.append(key, v);
    }
    if (query.kind) q.append("kind", query.kind);
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws/stream?" + q;
    if (!streams.has(url)) streams.set(url, new Stream(url));
    return streams.get(url);
  }

  const STATE_TEXT = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…" };

  /** Show a stream's state in an element (data-state and its text). */
  function indicate(element, liveStream) {
    return liveStream.watch((state) => {
      element.dataset.state = state;
      element.textContent = STATE_TEXT[state] || state;
      element.title = state === "live" ? "New points appear as they arrive" : "Live updates are paused";
    });
  }

  // -- a chart ----------------------------------------------------------------------------------

  class Chart {
    constructor(element, options) {
      this.el = element;
      this.device = options.device || element.dataset.device;
      this.sensor = options.sensor || element.dataset.sensor;
      this.range = options.range || { last: "1h" };
      this.kind = options.kind || element.dataset.kind || "line";
      this.unit = options.unit !== undefined ? options.unit : (element.dataset.unit || "");
      this.label = options.label || element.dataset.label || this.sensor;
      const described = element.getAttribute("aria-describedby");
      this.summary = options.summary || (described && document.getElementById(described)) || null;
      this.plot = null;
      this.rows = null;  // {mode, interval, xs, ys} or {mode, interval, xs, avg, min, max, count}
      this.pending = [];
      this.generation = 0;
      this.windowS = durationS(this.range.last);
      const live = options.stream !== undefined ? options.stream
        : (this.range.last ? stream({ device: this.device, kind: "telemetry" }) : null);
      if (live && this.range.last) {
        this.unlisten = live.listen((item) => this.hear(item), () => this.load());
        this.slider = setInterval(() => this.slide(), SLIDE_MS);
      }
      if (typeof ResizeObserver !== "undefined") {
        this.resizer = new ResizeObserver(() => {
          if (this.plot) this.plot.setSize({ width: this.width(), height: CHART_HEIGHT });
        });
        this.resizer.observe(element);
      }
    }

    width() { return Math.max(200, this.el.clientWidth || 600); }

    /** The range in seconds and the API's from/to for it. */
    bounds() {
      if (this.range.last) {
        return { seconds: this.windowS, query: { from: "-" + this.range.last } };
      }
      const query = {};
      if (this.range.from) query.from = this.range.from;
      if (this.range.to) query.to = this.range.to;
      const lo = instantS(this.range.from);
      const hi = this.range.to ? instantS(this.range.to) : Date.now() / 1000;
      return { seconds: hi - lo, lo, hi, query };
    }

    url(params) {
      const q = new URLSearchParams({ sensor: this.sensor });
      for (const [k, v] of Object.entries(params)) q.append(k, v);
      return "/api/v1/devices/" + encodeURIComponent(this.device) + "/telemetry?" + q;
    }

    /** (Re)read the range from the API and draw it; live items heard meanwhile are added after. */
    async load() {
      const generation = ++this.generation;
      this.pending = [];
      this.rows = null;
      this.el.dataset.state = "loading";
      try {
        const rows = await this.fetchRows();
        if (generation !== this.generation) return;
        this.rows = rows;
        for (const item of this.pending) this.add(item);
        this.pending = [];
        this.trim();
        this.draw();
      } catch (problem) {
        if (generation !== this.generation) return;
        this.fail(problem instanceof Error ? { detail: problem.message } : problem);
      }
    }

    async fetchRows() {
      const { seconds, query } = this.bounds();
      if (this.kind === "list") {
        const answer = await getJson(this.url({ ...query, order: "desc", limit: LIST_ROWS }));
        return { mode: "raw", items: answer.items };
      }
      const aggregate = seconds > RAW_MAX_RANGE_S;
      if (!aggregate || !(seconds > 0)) {  // an unknown or backwards range: the API says what is wrong
        const answer = await getJson(this.url({ ...query, order: "desc", limit: RAW_LIMIT }));
        if (answer.items.length < RAW_LIMIT || !(seconds > 0)) {
          const items = answer.items.slice().reverse();
          return {
            mode: "raw", interval: 0,
            xs: items.map((p) => Date.parse(p.ts) / 1000), ys: items.map((p) => p.value),
          };
        }
      }
      const interval = bucketFor(seconds);
      const answer = await getJson(this.url({ ...query, agg: "avg,min,max,count", interval: intervalText(interval) }));
      const b = answer.items;
      return {
        mode: "aggregate", interval,
        xs: b.map((x) => Date.parse(x.ts) / 1000), avg: b.map((x) => x.avg),
        min: b.map((x) => x.min), max: b.map((x) => x.max), count: b.map((x) => x.count),
      };
    }

    /** A live item from the stream: this sensor's points join the chart. */
    hear(item) {
      if (item.type !== "telemetry" || item.device_id !== this.device || item.sensor !== this.sensor) return;
      if (!this.rows) { this.pending.push(item); return; }
      this.add(item);
      this.trim();
      this.draw();
    }

    add(item) {
      const rows = this.rows;
      if (rows.items) {  // a list: newest first, at most LIST_ROWS
        if (rows.items.some((p) => p.ts === item.ts)) return;
        rows.items.unshift({ ts: item.ts, value: item.value });
        rows.items.sort((a, b) => Date.parse(b.ts) - Date.parse(a.ts));
        rows.items.length = Math.min(rows.items.length, LIST_ROWS);
        return;
      }
      const v = item.value;
      if (typeof v !== "number") return;
      const x = Date.parse(item.ts) / 1000;
      if (rows.mode === "raw") {
        const i = lowerBound(rows.xs, x);
        if (rows.xs[i] === x) { rows.ys[i] = v; return; }
        rows.xs.splice(i, 0, x);
        rows.ys.splice(i, 0, v);
        if (rows.xs.length > RAW_LIMIT) { rows.xs.shift(); rows.ys.shift(); }
        return;
      }
      const s = rows.interval;
      const origin = s % 604800 === 0 ? FIRST_MONDAY_S : 0;
      const start = Math.floor((x - origin) / s) * s + origin;
      const i = lowerBound(rows.xs, start);
      if (rows.xs[i] === start) {
        const n = rows.count[i] || 0;
        rows.avg[i] = (rows.avg[i] * n + v) / (n + 1);
        rows.min[i] = Math.min(rows.min[i], v);
        rows.max[i] = Math.max(rows.max[i], v);
        rows.count[i] = n + 1;
        return;
      }
      rows.xs.splice(i, 0, start);
      rows.avg.splice(i, 0, v); rows.min.splice(i, 0, v); rows.max.splice(i, 0, v); rows.count.splice(i, 0, 1);
    }

    /** A sliding window drops what fell out of it. */
    trim() {
      const rows = this.rows;
      if (!rows || !rows.xs || !this.range.last) return;
      const edge = Date.now() / 1000 - this.windowS - (rows.interval || 0);
      let n = 0;
      while (n < rows.xs.length && rows.xs[n] < edge) n++;
      if (!n) return;
      for (const key of ["xs", "ys", "avg", "min", "max", "count"]) if (rows[key]) rows[key].splice(0, n);
    }

    slide() {
      if (!this.rows || !this.plot) return;
      this.trim();
      this.draw();
    }

    xRange(min, max) {
      if (this.range.last) { const now = Date.now() / 1000; return [now - this.windowS, now]; }
      const b = this.bounds();
      if (b.lo < b.hi) return [b.lo, b.hi];
      return min === max ? [min - 60, max + 60] : [min, max];
    }

    data() {
      const r = this.rows;
      return r.mode === "raw" ? [r.xs, r.ys] : [r.xs, r.avg, r.min, r.max];
    }

    draw() {
      if (this.kind === "list") { this.drawList(); return; }
      const r = this.rows;
      if (!r.xs.length) { this.empty(); return; }
      if (this.plot && this.plot.series.length === this.data().length) {
        this.plot.setData(this.data());
        return;
      }
      this.destroyPlot();
      this.el.replaceChildren();
      this.plot = new uPlot(this.options(), this.data(), this.el);
    }

    options() {
      const unit = this.unit ? " (" + this.unit + ")" : "";
      const values = (u, v) => (v == null ? "—" : formatValue(v) + (this.unit ? " " + this.unit : ""));
      const series = [{ label: "Time (UTC)", value: (u, x) => (x == null ? "—" : when(x)) }];
      const opts = {
        width: this.width(), height: CHART_HEIGHT,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true, range: (u, min, max) => this.xRange(min, max) } },
        axes: [{}, { label: this.unit || undefined, size: 64 }],
        cursor: { drag: { x: false, y: false } },  // the range picker chooses the window
        hooks: { draw: [(u) => this.drawn(u)] },
        series,
      };
      if (this.rows.mode === "raw") {
        series.push({ label: this.label + unit, stroke: COLORS.line, width: 1.5, value: values });
      } else {
        series.push(
          { label: "avg" + unit, stroke: COLORS.line, width: 1.5, value: values },
          { label: "min", stroke: COLORS.edge, width: 1, value: values },
          { label: "max", stroke: COLORS.edge, width: 1, value: values },
        );
        opts.bands = [{ series: [3, 2], fill: COLORS.band }];
      }
      return opts;
    }

    /** After uPlot drew: tell what is on screen (attributes and the summary line). */
    drawn(u) {
      const r = this.rows;
      const n = u.data[0].length;
      const last = n ? u.data[1][n - 1] : null;
      this.mark("ready", n, last, n ? u.data[0][n - 1] : null);
      const unit = this.unit ? " " + this.unit : "";
      let text;
      if (r.mode === "raw") {
        text = n + (n === 1 ? " point" : " points");
      } else {
        text = n + " buckets of " + intervalText(r.interval) + " (avg line, min–max band)";
      }
      if (n) text += " · latest " + (r.mode === "raw" ? "" : "avg ") + formatValue(last) + unit + " at " + when(u.data[0][n - 1]);
      this.say(text);
    }

    mark(state, points, last, lastX) {
      const d = this.el.dataset;
      d.state = state;
      d.mode = this.rows && this.rows.mode ? this.rows.mode : "";
      d.interval = this.rows && this.rows.interval ? intervalText(this.rows.interval) : "";
      d.points = String(points);
      d.lastValue = last == null ? "" : formatValue(last);
      d.lastTs = lastX == null ? "" : new Date(lastX * 1000).toISOString();
      d.drawnAt = String(Date.now());
    }

    say(text) { if (this.summary) this.summary.textContent = text; }

    empty() {
      this.destroyPlot();
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = this.range.last
        ? "No data from this sensor in the " + (this.range.last === "1h" ? "last hour" : "last " + this.range.last)
          + ". New points appear here as the device sends them; a longer range may show older ones."
        : "No data from this sensor in this range. Pick another range above.";
      this.el.replaceChildren(p);
      this.mark("empty", 0, null, null);
      this.say("");
    }

    drawList() {
      const items = this.rows.items;
      if (!items.length) { this.empty(); return; }
      const table = document.createElement("table");
      table.className = "values";
      const head = table.createTHead().insertRow();
      for (const name of ["Time", "Value" + (this.unit ? " (" + this.unit + ")" : "")]) {
        const th = document.createElement("th");
        th.textContent = name;
        head.appendChild(th);
      }
      const body = table.createTBody();
      for (const p of items) {
        const row = body.insertRow();
        row.insertCell().textContent = when(Date.parse(p.ts) / 1000);
        const cell = row.insertCell();
        cell.className = "mono";
        cell.textContent = formatValue(p.value);
      }
      const wrap = document.createElement("div");
      wrap.className = "table-wrap values-wrap";
      wrap.appendChild(table);
      this.el.replaceChildren(wrap);
      this.mark("ready", items.length, items[0].value, Date.parse(items[0].ts) / 1000);
      this.say(items.length + " newest values" + (items.length >= LIST_ROWS ? " (of more)" : "") + " · latest " + formatValue(items[0].value));
    }

    /** The API refused: its problem (detail and field errors) in the chart's place. */
    fail(problem) {
      this.destroyPlot();
      const box = document.createElement("div");
      box.className = "problem";
      box.setAttribute("role", "alert");
      box.dataset.problem = "";
      this.el.replaceChildren(box);
      if (window.Roost && window.Roost.showProblem) window.Roost.showProblem(this.el, problem);
      else box.textContent = problem.detail || problem.title || "the request failed";
      box.hidden = false;
      this.rows = null;
      this.mark("error", 0, null, null);
      this.say("");
    }

    destroyPlot() {
      if (this.plot) { this.plot.destroy(); this.plot = null; }
    }

    /** Stop listening and free the chart. */
    destroy() {
      this.generation++;
      if (this.unlisten) this.unlisten();
      if (this.slider) clearInterval(this.slider);
      if (this.resizer) this.resizer.disconnect();
      this.destroyPlot();
    }
  }

  /** Draw a sensor's range in element (and keep it live); answers the chart (.load, .destroy). */
  function mount(element, options) {
    const chart = new Chart(element, options || {});
    chart.load();
    return chart;
  }

  window.RoostChart = { mount, stream, indicate, bucketFor, intervalText, instantS, when, formatValue, RAW_LIMIT, RAW_MAX_RANGE_S };
})();
