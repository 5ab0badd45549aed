/* The gradient-flow explorer: a client of this service's public API (/v1/problems,
   /v1/gradients, /v1/gradcheck, /v1/grade). Charts are plotly.js (served from the installed
   plotly package). Forms are built from /explore/schema.json (ProblemsIn and CheckOptions of
   openapi.yaml), so every field of the contract is a form field and a query parameter. */
"use strict";
(function () {
  const INCLUDE = ["b_h_terms", "jacobian_norms"];
  const GRADIENTS_ONLY = ["include", "truncate"];        // /v1/gradients' own fields
  const PANEL_FIELDS = ["check", "submission", "tolerance", "format"];
  // the page's default problem: the lecture's character model, a little longer
  const PAGE_DEFAULTS = {tokens: "true", vocab_size: "6", hidden_size: "8", output_size: "6", steps: "10"};
  const KEY_STORE = "rnn-explore-api-key";
  // no mode bar over the titles: drag to zoom, double-click to reset
  const CONFIG = {responsive: true, displaylogo: false, displayModeBar: false};
  const RAW_INT = "@@rawint:";

  const $ = (id) => document.getElementById(id);
  const state = {schema: null, problem: null, gradientsBody: null, response: null, seq: 0,
                 lastAction: null, key: readKey(), gradcheck: null};
  const counters = {renders: 0, gradcheckRuns: 0, gradeRuns: 0, pasteRuns: 0, problemErrors: 0};

  function readKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }
  function bump(name) {
    counters[name] += 1;
    document.body.dataset[name] = String(counters[name]);
  }

  // ---- small DOM helpers (API text always goes in as text, never as HTML) ----------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  function setStatus(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
    document.body.dataset.state = isError ? "error" : (text ? "loading" : "ready");
  }
  function fmt(x, digits) {
    if (x === null || x === undefined) return "null";
    if (typeof x !== "number") return JSON.stringify(x);
    if (x === 0) return "0";
    const a = Math.abs(x);
    return (a >= 1e-3 && a < 1e5) ? String(+x.toPrecision(digits || 6)) : x.toExponential((digits || 6) - 2);
  }
  const range = (n) => Array.from({length: n}, (_, i) => i);

  // ---- JSON with integers beyond 2^53 kept exact ----------------------------------------------
  function stringify(value, indent) {
    const text = JSON.stringify(value, (k, v) => (v && v.__rawInt) ? RAW_INT + v.__rawInt : v, indent);
    return text.replace(new RegExp('"' + RAW_INT + '([+-]?\\d+)"', "g"), "$1");
  }

  // ---- the API -----------------------------------------------------------------------------------
  async function apiPost(path, text) {
    const headers = {"Content-Type": "application/json", "Accept": "application/json"};
    if (state.key) headers.Authorization = "Bearer " + state.key;
    let response;
    try {
      response = await fetch(path, {method: "POST", headers, body: text});
    } catch (e) {
      return {ok: false, status: 0, problem: {title: "Network error", detail: `could not reach ${path}: ${e.message}`}};
    }
    const body = await response.text();
    let data = null;
    try { data = JSON.parse(body); } catch (e) { data = null; }
    if (response.status === 401) askForKey(data);
    if (response.ok && data !== null) return {ok: true, status: response.status, data};
    const problem = (data && typeof data === "object" && !Array.isArray(data)) ? data
      : {title: `HTTP ${response.status}`, detail: body.slice(0, 400)};
    problem.status = problem.status || response.status;
    return {ok: false, status: response.status, problem};
  }

  function askForKey(problem) {
    const form = $("auth");
    form.hidden = false;
    $("auth-message").textContent = state.key
      ? `The key was refused (401${problem && problem.detail ? ": " + problem.detail : ""}).`
      : `This service needs an API key (401${problem && problem.detail ? ": " + problem.detail : ""}).`;
    $("api-key").focus();
  }

  // ---- errors next to their fields ---------------------------------------------------------------
  function clearErrors(box, container) {
    box.replaceChildren();
    if (container) {
      for (const f of container.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
      for (const e of container.querySelectorAll(".field-error")) e.textContent = "";
      for (const t of container.querySelectorAll("textarea.invalid")) t.classList.remove("invalid");
    }
  }
  /* box: where the whole problem is listed (each pointer and detail); fieldFor(pointer) names the
     form field a pointer belongs to ({wrap, err}), whose own error line gets the detail too. */
  function showProblem(box, problem, fieldFor, textarea) {
    const head = el("div", {}, el("strong", {}, `${problem.status || ""} ${problem.title || "Error"}`.trim()),
                    problem.detail ? ": " + problem.detail : "");
    const items = Array.isArray(problem.errors) ? problem.errors : [];
    const list = el("ul", {class: "pointers"});
    for (const e of items) {
      const pointer = typeof e.pointer === "string" ? e.pointer : "";
      list.append(el("li", {"data-pointer": pointer}, el("code", {}, pointer || "(the whole body)"), ": ", e.detail || ""));
      const target = fieldFor && fieldFor(pointer);
      if (target) {
        target.wrap.classList.add("invalid");
        target.err.textContent += (target.err.textContent ? "; " : "") + (e.detail || "invalid");
      }
    }
    box.replaceChildren(head);
    if (items.length) box.append(list);
    if (problem.status === 401) box.append(el("div", {}, "Enter an API key above, then try again."));
    if (textarea) textarea.classList.add("invalid");
  }
  function fieldLookup(container, prefix) {
    return (pointer) => {
      if (!pointer.startsWith(prefix)) return null;
      const name = pointer.slice(prefix.length).split("/")[0];
      const wrap = container.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
      return wrap ? {wrap, err: wrap.querySelector(".field-error")} : null;
    };
  }

  // ---- forms built from the contract's schemas -----------------------------------------------------
  function defaultText(f) {
    if (!("default" in f) || f.default === null) return "";
    return Array.isArray(f.default) ? f.default.join(", ") : String(f.default);
  }
  function buildFields(container, fields, prefix) {
    container.replaceChildren();
    for (const f of fields) {
      const id = prefix + f.name;
      const wrap = el("div", {class: "field", "data-field": f.name});
      const label = el("label", {for: id, title: f.description || null}, f.name);
      let input;
      const options = f.enum || (f.type === "boolean" ? [true, false] : null);
      if (options) {
        input = el("select", {id, name: f.name, title: f.description || null});
        input.append(el("option", {value: ""}, defaultText(f) ? `(default: ${defaultText(f)})` : "(default)"));
        for (const v of options) input.append(el("option", {value: String(v)}, String(v)));
      } else {
        const placeholder = f.type === "array" ? (defaultText(f) || "all") + " (comma-separated)" : defaultText(f);
        input = el("input", {id, name: f.name, type: "text", placeholder: placeholder || "(default)",
                             inputmode: f.type === "integer" ? "numeric" : (f.type === "number" ? "decimal" : null),
                             autocomplete: "off", spellcheck: "false", title: f.description || null});
      }
      wrap.append(label, input, el("div", {class: "field-error", id: prefix + "err-" + f.name, "aria-live": "polite"}));
      container.append(wrap);
    }
  }
  function readFields(container) {
    const raw = {};
    for (const input of container.querySelectorAll("input[name], select[name]")) raw[input.name] = input.value;
    return raw;
  }
  function writeFields(container, raw) {
    for (const input of container.querySelectorAll("input[name], select[name]")) {
      const v = raw[input.name];
      input.value = v === undefined || v === null ? "" : (Array.isArray(v) ? v.join(", ") : String(v));
      if (input.tagName === "SELECT" && input.value !== String(v ?? "")) {
        input.append(el("option", {value: String(v)}, String(v)));     // a value the schema lacks
        input.value = String(v);
      }
    }
  }
  /* A form or query string value, typed by its schema field; "" is left out (the API's default).
     A value that does not parse is sent as the text it is, so the API's 422 names it. */
  function typed(f, text) {
    const s = String(text).trim();
    if (s === "") return undefined;
    switch (f.type) {
      case "boolean":
        if (/^(true|1|on|yes)$/i.test(s)) return true;
        if (/^(false|0|off|no)$/i.test(s)) return false;
        return s;
      case "integer":
        if (/^[+-]?\d+$/.test(s)) return Number.isSafeInteger(Number(s)) ? Number(s) : {__rawInt: s};
        return s;
      case "number":
        return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(s) ? Number(s) : s;
      case "array":
        return s.split(/[\s,]+/).filter(Boolean);
      case "string":
        return s;
      default:
        try { return JSON.parse(s); } catch (e) { return s; }
    }
  }
  function typedBody(fields, raw) {
    const body = {};
    for (const f of fields) {
      if (!(f.name in raw)) continue;
      const v = typed(f, raw[f.name]);
      if (v !== undefined) body[f.name] = v;
    }
    return body;
  }

  // ---- the problem: query string <-> form <-> /v1/problems -------------------------------------
  function queryValues(fields) {
    const names = new Set(fields.map((f) => f.name));
    const raw = {};
    for (const [k, v] of new URLSearchParams(location.search)) if (names.has(k)) raw[k] = v;
    // the page's defaults fill what the query does not name (an empty value names a field too:
    // `?vocab_size=` asks for the API's default); dense inputs take none of the token defaults
    const dense = ("input_size" in raw && raw.input_size !== "")
      || ("tokens" in raw && typed({type: "boolean"}, raw.tokens) !== true);
    for (const [k, v] of Object.entries(PAGE_DEFAULTS)) {
      if (!names.has(k) || k in raw) continue;
      if ((k === "tokens" || k === "vocab_size") && dense) continue;
      raw[k] = v;
    }
    return raw;
  }
  function queryString(fields, raw) {
    const q = new URLSearchParams();
    for (const f of fields) {
      const v = (raw[f.name] || "").trim();
      if (v !== "") q.set(f.name, v);
      else if (f.name in PAGE_DEFAULTS) q.set(f.name, "");   // keeps the page default out on reload
    }
    return q.toString();
  }

  async function drawFromForm(updateUrl) {
    state.lastAction = () => drawFromForm(updateUrl);
    const fields = state.schema.problems;
    const container = $("problem-fields");
    clearErrors($("problem-errors"), container);
    const raw = readFields(container);
    const query = queryString(fields, raw);
    $("permalink").href = "/explore" + (query ? "?" + query : "");
    if (updateUrl) history.replaceState(null, "", $("permalink").href);
    setStatus("Drawing a problem (POST /v1/problems) …");
    $("problem-draw").disabled = true;
    try {
      const r = await apiPost("/v1/problems", stringify(typedBody(fields, raw)));
      if (!r.ok) {
        showProblem($("problem-errors"), r.problem, fieldLookup(container, "/"));
        setStatus("/v1/problems refused these fields: see the messages next to them.", true);
        bump("problemErrors");
        return;
      }
      await showBody(r.data, "form");
    } finally {
      $("problem-draw").disabled = false;
    }
  }

  /* Splits a body into the problem and the fields of the other panels (check, submission, …). */
  function splitPanels(obj) {
    const problem = {};
    const panels = {};
    for (const [k, v] of Object.entries(obj)) (PANEL_FIELDS.includes(k) ? panels : problem)[k] = v;
    return {problem, panels};
  }
  function fillPanels(panels) {
    if (panels.check && typeof panels.check === "object") writeFields($("check-fields"), panels.check);
    if (panels.submission !== undefined) $("submission").value = JSON.stringify(panels.submission, null, 1);
    if (panels.tolerance && typeof panels.tolerance === "object") {
      $("grade-rtol").value = panels.tolerance.rtol ?? "";
      $("grade-atol").value = panels.tolerance.atol ?? "";
    }
  }

  async function runPaste() {
    state.lastAction = runPaste;
    const box = $("paste-errors");
    clearErrors(box, $("paste-box"));
    const text = $("paste").value;
    let parsed;
    let parsedOk = true;
    try { parsed = JSON.parse(text); } catch (e) { parsedOk = false; }
    try {
      if (parsedOk && parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
        const {problem, panels} = splitPanels(parsed);
        fillPanels(panels);
        await showBody(problem, "paste");
      } else {
        // not a JSON object: sent exactly as typed, the API says what is wrong
        setStatus("Sending the pasted body (POST /v1/gradients) …");
        const r = await apiPost("/v1/gradients", text);
        if (r.ok) {         // cannot happen for a non-object, but never hide an answer
          box.replaceChildren(el("div", {}, "The API accepted a body that is not a JSON object."));
        } else {
          showProblem(box, r.problem, null, $("paste"));
          setStatus("The pasted body was refused: see the message under the text area.", true);
        }
      }
    } finally {
      bump("pasteRuns");
    }
  }

  /* Sends a problem object to /v1/gradients (with the diagnostics) and draws everything. */
  async function showBody(problem, source) {
    const body = {...problem};
    if (!("include" in body)) body.include = INCLUDE;
    setStatus("Computing outputs and gradients (POST /v1/gradients) …");
    let r = await apiPost("/v1/gradients", stringify(body));
    let note = "";
    if (!r.ok && r.status === 413 && !("include" in problem)) {
      // T²·H over the diagnostics' limit: draw what the API can still give
      const without = {...problem};
      const retry = await apiPost("/v1/gradients", stringify(without));
      if (retry.ok) { note = `b_h_terms and jacobian_norms left out: ${r.problem.detail || "over a limit"}`; r = retry; }
    }
    if (!r.ok) {
      const box = source === "paste" ? $("paste-errors") : $("problem-errors");
      if (source === "paste") {
        showProblem(box, r.problem, null, $("paste"));
        setStatus("The pasted body was refused: see the messages under the text area.", true);
      } else {
        showProblem(box, r.problem, fieldLookup($("problem-fields"), "/"));
        setStatus("/v1/gradients refused the problem.", true);
      }
      return false;
    }
    state.gradientsBody = problem;
    state.problem = Object.fromEntries(Object.entries(problem).filter(([k]) => !GRADIENTS_ONLY.includes(k)));
    state.response = r.data;
    state.note = note;
    state.source = source;
    state.seq = 0;
    if (source === "form") $("paste").value = stringify(problem, 1);
    $("gradcheck-result").replaceChildren();
    $("gradcheck-charts").replaceChildren();
    $("grade-result").replaceChildren();
    setupSequences();
    render();
    return true;
  }

  // ---- array shapes: a leading batch axis, coursera's time-last layout ------------------------
  function depth(a) {
    if (!Array.isArray(a)) return 0;
    const first = a.find((x) => x !== null && x !== undefined);
    return first === undefined ? 1 : 1 + depth(first);
  }
  /* coursera: F×m×T (time last) -> m×T×F */
  function timeLast(a) {
    if (depth(a) !== 3) return a;
    const F = a.length, m = a[0].length, T = a[0][0].length;
    return range(m).map((b) => range(T).map((t) => range(F).map((f) => a[f][b][t])));
  }
  function views() {
    const resp = state.response, prob = state.problem;
    const coursera = prob.layout === "coursera";
    let outputs = resp.outputs ?? null, hidden = resp.hidden ?? null;
    if (coursera) { outputs = timeLast(outputs); hidden = timeLast(hidden); }
    const bptt = resp.bptt || {};
    const batched = depth(hidden) === 3 || depth(outputs) === 3 || depth(resp.step_losses) === 2;
    const B = batched ? (hidden || outputs || resp.step_losses).length : 1;
    const b = Math.min(state.seq, B - 1);
    const pick = (a, base) => (a !== null && a !== undefined && depth(a) === base + 1) ? a[b] : a;
    let targets = prob.targets;
    if (batched && Array.isArray(targets) && targets.length === B && Array.isArray(targets[b]) && depth(targets) >= 2) targets = targets[b];
    let tokens = prob.tokens;
    if (batched && Array.isArray(tokens) && depth(tokens) === 2) tokens = tokens[b];
    return {
      batched, B, b,
      outputs: pick(outputs, 2), hidden: pick(hidden, 2), stepLosses: pick(resp.step_losses, 1),
      hiddenGradNorms: pick(bptt.hidden_grad_norms, 1), jacobianNorms: pick(bptt.jacobian_norms, 2),
      byStep: bptt.b_h_by_step, terms: bptt.b_h_terms, targets, tokens,
      cell: (prob.model && prob.model.cell) || "rnn",
    };
  }
  function setupSequences() {
    const v = views();
    const select = $("sequence");
    select.replaceChildren(...range(v.B).map((b) => el("option", {value: String(b)}, `sequence ${b} of ${v.B}`)));
    $("sequence-box").hidden = !v.batched;
  }

  // ---- charts ---------------------------------------------------------------------------------------
  function layout(title, subtitle, xTitle, yTitle, extra) {
    return Object.assign({
      title: {text: title, subtitle: {text: subtitle || "", font: {size: 11, color: "#57606a"}}, x: 0.01, xanchor: "left", font: {size: 13}},
      margin: {l: 60, r: 20, t: subtitle ? 62 : 44, b: 50},
      xaxis: {title: {text: xTitle}, automargin: true, zeroline: false},
      yaxis: {title: {text: yTitle}, automargin: true, zeroline: false},
      font: {family: "system-ui, -apple-system, Segoe UI, Roboto, DejaVu Sans, sans-serif", size: 11},
      paper_bgcolor: "#fff", plot_bgcolor: "#fff", showlegend: false,
    }, extra || {});
  }
  function matrixAxes(rows, extra) {
    return Object.assign({autorange: "reversed", dtick: rows <= 24 ? 1 : undefined}, extra || {});
  }
  function empty(id, text) {
    const node = $(id);
    if (window.Plotly && node.data) Plotly.purge(node);
    node.replaceChildren(el("p", {class: "note"}, text));
    node.dataset.rows = ""; node.dataset.cols = "";
  }
  function draw(id, traces, lay, rows, cols) {
    const node = $(id);
    if (!node.data) node.replaceChildren();
    Plotly.react(node, traces, lay, CONFIG);
    node.dataset.rows = rows === undefined ? "" : String(rows);
    node.dataset.cols = cols === undefined ? "" : String(cols);
  }
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  /* a heatmap of positive numbers on a log10 colour scale, ticks labelled 10^e */
  function logHeatmap(z, hoverName) {
    const logs = z.map((row) => row.map((x) => (x === null || x === undefined || !(x > 0)) ? null : Math.log10(x)));
    const flat = logs.flat().filter((x) => x !== null);
    const lo = flat.length ? Math.floor(Math.min(...flat)) : -1;
    const hi = flat.length ? Math.ceil(Math.max(...flat)) : 1;
    const step = Math.max(1, Math.ceil((hi - lo) / 8));
    const tickvals = [];
    for (let e = lo; e <= hi; e += step) tickvals.push(e);
    return {
      type: "heatmap", z: logs, customdata: z, colorscale: "Viridis", zmin: lo, zmax: hi === lo ? lo + 1 : hi,
      x: range(z[0] ? z[0].length : 0), y: range(z.length), hoverongaps: false,
      colorbar: {title: {text: hoverName + "<br>(log scale)"}, tickvals, ticktext: tickvals.map((e) => `10<sup>${e}</sup>`)},
      hovertemplate: "t=%{y}, k=%{x}<br>" + hoverName + " = %{customdata:.3e}<extra></extra>",
    };
  }

  function render() {
    const v = views();
    const resp = state.response, prob = state.problem;
    const T = (v.hidden || v.outputs || v.stepLosses || []).length;
    const H = v.hidden && v.hidden[0] ? v.hidden[0].length : "?";
    const N = v.outputs && v.outputs[0] ? v.outputs[0].length : null;
    const s = v.cell === "lstm" ? "s" : "h";
    const stateNote = v.cell === "lstm" ? " (s = [h; c], the LSTM's state)" : "";
    const summary = [state.source === "paste" ? "pasted body" : "from /v1/problems", `cell ${v.cell}`, `T = ${T}`, `H = ${H}`, N === null ? "no output layer" : `N = ${N}`,
                     v.batched ? `B = ${v.B} sequences (showing sequence ${v.b})` : "one sequence",
                     `loss L = ${fmt(resp.loss)}` + (prob.reduction ? ` (${prob.reduction})` : ""),
                     `layout ${prob.layout || "lecture"}`];
    $("summary").textContent = summary.join(" · ") + (state.note ? " · " + state.note : "");
    const ts = range(T);

    // outputs ŷ_t, the target marked
    if (v.outputs) {
      const traces = [{
        type: "heatmap", z: v.outputs, x: range(N), y: ts, colorscale: "Blues", reversescale: true, zmin: 0,
        zmax: (prob.model && prob.model.output_activation === "identity") ? undefined : 1,
        colorbar: {title: {text: "ŷ<sub>t</sub>[j]"}},
        hovertemplate: "t=%{y}, j=%{x}<br>ŷ_t[j] = %{z:.4f}<extra></extra>",
      }];
      const classes = Array.isArray(v.targets) ? ts.map((t) => (typeof v.targets[t] === "number" ? v.targets[t] : null)) : [];
      const marked = classes.filter((c) => c !== null).length;
      if (marked) {
        traces.push({type: "scatter", mode: "markers", x: classes, y: ts, name: "target y_t",
                     marker: {symbol: "x-thin", size: 12, color: "#d62728", line: {width: 3, color: "#d62728"}},
                     hovertemplate: "target y_t = %{x} at t = %{y}<extra></extra>"});
      }
      const sub = marked ? "each row a distribution over the vocabulary; ✕ = the target y<sub>t</sub>"
        : (Array.isArray(v.targets) ? "vector targets (not marked)" : "no targets");
      draw("chart-outputs", traces, layout("Outputs ŷ<sub>t</sub> (T×N)", sub, "j (output class / vocabulary index)", "t (time step)",
           {yaxis: matrixAxes(T, {title: {text: "t (time step)"}}), xaxis: {title: {text: "j (output class / vocabulary index)"}, dtick: N <= 30 ? 1 : undefined}}), T, N);
    } else {
      empty("chart-outputs", "No output layer (layer mode): outputs is null.");
    }

    // per-step losses
    if (Array.isArray(v.stepLosses)) {
      draw("chart-losses", [{type: "bar", x: ts, y: v.stepLosses, marker: {color: "#1f77b4"},
                             hovertemplate: "t=%{x}<br>L_t = %{y:.5g}<extra></extra>"}],
           layout("Per-step losses L<sub>t</sub>", `L = ${fmt(resp.loss)}; an unscored step (null target) has no bar`,
                  "t (time step)", "L<sub>t</sub>", {xaxis: {title: {text: "t (time step)"}, dtick: T <= 30 ? 1 : undefined}}), T, 1);
    } else {
      empty("chart-losses", "No per-step losses in this answer.");
    }

    // hidden states h_t
    if (v.hidden) {
      draw("chart-hidden", [{type: "heatmap", z: v.hidden, x: range(H), y: ts, colorscale: "RdBu", zmid: 0,
                             colorbar: {title: {text: "h<sub>t</sub>[i]"}},
                             hovertemplate: "t=%{y}, i=%{x}<br>h_t[i] = %{z:.4f}<extra></extra>"}],
           layout("Hidden states h<sub>t</sub> (T×H)", "", "i (hidden unit)", "t (time step)",
                  {yaxis: matrixAxes(T, {title: {text: "t (time step)"}})}), T, H);
    } else {
      empty("chart-hidden", "No hidden states in this answer.");
    }

    // the vanishing / exploding picture
    const jacName = `‖Π<sub>i=k+1..t</sub> ∂${s}<sub>i</sub>/∂${s}<sub>i−1</sub>‖₂`;
    if (Array.isArray(v.jacobianNorms)) {
      draw("chart-jacobian", [logHeatmap(v.jacobianNorms, "‖Π ∂" + s + "_i/∂" + s + "_{i−1}‖")],
           layout(jacName + " (T×T)", "spectral norm of the Jacobian product from step k to step t, log colour" + stateNote,
                  "k (earlier step)", "t (later step)",
                  {yaxis: matrixAxes(T, {title: {text: "t (later step)"}}), xaxis: {title: {text: "k (earlier step)"}, dtick: T <= 24 ? 1 : undefined}}),
           v.jacobianNorms.length, v.jacobianNorms[0] ? v.jacobianNorms[0].length : 0);
    } else {
      empty("chart-jacobian", "jacobian_norms not in this answer" + (state.note ? ": " + state.note : "."));
    }
    if (Array.isArray(v.hiddenGradNorms)) {
      draw("chart-hidden-grad", [{type: "scatter", mode: "lines+markers", x: ts, y: v.hiddenGradNorms, line: {color: "#9467bd"},
                                  hovertemplate: "t=%{x}<br>‖∂L/∂" + s + "_t‖ = %{y:.3e}<extra></extra>"}],
           layout(`‖∂L/∂${s}<sub>t</sub>‖₂ per step (hidden_grad_norms)`, "the total derivative of L with respect to the state at step t; log axis",
                  "t (time step)", `‖∂L/∂${s}<sub>t</sub>‖₂`,
                  {yaxis: {type: "log", title: {text: `‖∂L/∂${s}<sub>t</sub>‖₂`}, automargin: true}, xaxis: {title: {text: "t (time step)"}, dtick: T <= 30 ? 1 : undefined}}), T, 1);
    } else {
      empty("chart-hidden-grad", "hidden_grad_norms not in this answer.");
    }

    // the double sum
    renderDoubleSum(v, T, s);
    bump("renders");
    setStatus("");
  }

  function renderDoubleSum(v, T, s) {
    const resp = state.response;
    const batchNote = v.batched ? ", Σ over the batch" : "";
    const checks = [];
    let termSums = null;
    if (Array.isArray(v.terms)) {
      const z = v.terms.map((row, t) => row.map((term, k) => (k <= t ? norm(term) : null)));
      termSums = v.terms.map((row) => row[0].map((_, i) => row.reduce((acc, term) => acc + term[i], 0)));
      const trace = logHeatmap(z, "‖b_h_terms[t][k]‖");
      trace.colorscale = "Cividis";
      draw("chart-terms", [trace],
           layout(`‖b_h_terms[t][k]‖₂ (T×T${batchNote})`, `∂L_t/∂ŷ_t·∂ŷ_t/∂h_t·(Π ∂${s}_i/∂${s}_{i−1})·∂h_k/∂b_h, log colour`,
                  "k (step whose ∂h_k/∂b_h)", "t (loss L_t)",
                  {yaxis: matrixAxes(T, {title: {text: "t (loss L<sub>t</sub>)"}}), xaxis: {title: {text: "k (step of ∂h<sub>k</sub>/∂b<sub>h</sub>)"}, dtick: T <= 24 ? 1 : undefined}}),
           z.length, z[0] ? z[0].length : 0);
    } else {
      empty("chart-terms", "b_h_terms not in this answer" + (state.note ? ": " + state.note : "."));
    }
    const byStep = v.byStep;
    let total = null;
    if (Array.isArray(byStep)) {
      const G = byStep[0].length;
      draw("chart-by-step", [{type: "heatmap", z: byStep, x: range(G), y: range(byStep.length), colorscale: "RdBu", zmid: 0,
                              colorbar: {title: {text: "∂L<sub>t</sub>/∂b<sub>h</sub>[i]"}},
                              hovertemplate: "t=%{y}, i=%{x}<br>b_h_by_step = %{z:.4e}<extra></extra>"}],
           layout("b_h_by_step[t] = Σ<sub>k</sub> b_h_terms[t][k] = ∂L<sub>t</sub>/∂b<sub>h</sub>", "row t: the row sum of the t×k picture" + (v.batched ? " (Σ over the batch)" : ""),
                  v.cell === "rnn" ? "i (unit of b_h)" : `i (unit of b_h, ${v.cell === "lstm" ? "blocks i, f, g, o" : "blocks r, z, n"} of H each)`,
                  "t (time step)", {yaxis: matrixAxes(byStep.length, {title: {text: "t (time step)"}})}), byStep.length, G);
      const sums = byStep[0].map((_, i) => byStep.reduce((acc, row) => acc + row[i], 0));
      const g = resp.gradients && Array.isArray(resp.gradients.b_h) && depth(resp.gradients.b_h) === 1 ? resp.gradients.b_h : null;
      total = g || sums;
      const traces = [{type: "bar", x: range(G), y: total, name: g ? "gradients.b_h" : "Σ_t b_h_by_step[t]", marker: {color: "#2ca02c"},
                       hovertemplate: "i=%{x}<br>∂L/∂b_h[i] = %{y:.5e}<extra></extra>"}];
      if (g) traces.push({type: "scatter", mode: "markers", x: range(G), y: sums, name: "Σ_t b_h_by_step[t]",
                          marker: {symbol: "diamond-open", size: 9, color: "#000"},
                          hovertemplate: "i=%{x}<br>Σ_t b_h_by_step[t][i] = %{y:.5e}<extra></extra>"});
      draw("chart-bh", traces,
           layout("∂L/∂b<sub>h</sub> = Σ<sub>t</sub> b_h_by_step[t]" + (g ? " = gradients.b_h" : ""),
                  g ? "bars: gradients.b_h; ◇: the column sums of b_h_by_step" : "this layout names b_h differently: the column sums of b_h_by_step",
                  "i (unit of b_h)", "∂L/∂b<sub>h</sub>[i]", {showlegend: false}), G, 1);
      if (termSums) checks.push(`max |Σ_k b_h_terms[t][k] − b_h_by_step[t]| = ${fmt(maxDiff(termSums.flat(), byStep.flat()), 3)}`);
      if (g) checks.push(`max |Σ_t b_h_by_step[t] − gradients.b_h| = ${fmt(maxDiff(sums, g), 3)}`);
    } else {
      empty("chart-by-step", "b_h_by_step not in this answer.");
      empty("chart-bh", "No b_h gradient in this answer.");
    }
    $("sum-check").textContent = checks.length ? "The identities, from these numbers: " + checks.join("; ") + "." : "";
    state.noBptt = Array.isArray(v.terms) ? v.terms[0][0].map((_, i) => v.terms.reduce((acc, row, t) => acc + row[t][i], 0)) : null;
  }
  function maxDiff(a, b) {
    let m = 0;
    for (let i = 0; i < Math.min(a.length, b.length); i++) m = Math.max(m, Math.abs(a[i] - b[i]));
    return m;
  }

  // ---- gradient check ----------------------------------------------------------------------------
  async function runGradcheck() {
    state.lastAction = runGradcheck;
    const container = $("check-fields");
    const box = $("gradcheck-errors");
    clearErrors(box, container);
    if (!state.problem) { box.replaceChildren(el("div", {}, "Draw or paste a problem first.")); return; }
    const check = typedBody(state.schema.check, readFields(container));
    const body = {...state.problem, check};
    $("gradcheck-run").disabled = true;
    $("gradcheck-result").replaceChildren(el("p", {class: "note"}, "Checking (POST /v1/gradcheck) …"));
    try {
      const r = await apiPost("/v1/gradcheck", stringify(body));
      if (!r.ok) {
        $("gradcheck-result").replaceChildren();
        showProblem(box, r.problem, fieldLookup(container, "/check/"));
        return;
      }
      renderGradcheck(r.data);
    } finally {
      $("gradcheck-run").disabled = false;
      bump("gradcheckRuns");
    }
  }

  function renderGradcheck(report) {
    const result = $("gradcheck-result");
    const charts = $("gradcheck-charts");
    for (const node of charts.querySelectorAll(".chart")) if (node.data) Plotly.purge(node);
    charts.replaceChildren();
    const verdict = el("span", {class: "verdict " + (report.passed ? "pass" : "fail"), id: "gradcheck-verdict"},
                       report.passed ? "PASSED" : "FAILED");
    const line = el("p", {}, verdict, ` · method ${report.method} · mode ${report.mode} · eps ${fmt(report.eps)} · rtol ${fmt(report.rtol)} · atol ${fmt(report.atol)}` +
                    (report.samples !== null && report.samples !== undefined ? ` · samples ${report.samples} · seed ${report.seed}` : "") +
                    ` · ${report.evaluations} loss evaluations` +
                    (report.convergence_order !== null && report.convergence_order !== undefined ? ` · convergence order ${fmt(report.convergence_order, 4)}` : ""));
    const head = ["parameter", "passed", "checked", "failed", "max |a − n|", "max rel", "worst index", "analytic there", "numerical there", "error estimate", "order"];
    const table = el("table", {class: "report", id: "gradcheck-table"},
                     el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {scope: "col"}, h)))));
    const tbody = el("tbody");
    const params = report.parameters || {};
    for (const [name, p] of Object.entries(params)) {
      tbody.append(el("tr", {class: p.passed ? "pass" : "fail", "data-parameter": name, "data-worst-index": JSON.stringify(p.worst_index)},
        el("th", {scope: "row"}, name), el("td", {}, p.passed ? "✓ pass" : "✗ FAIL"),
        el("td", {class: "num"}, p.checked), el("td", {class: "num"}, p.failed ?? ""),
        el("td", {class: "num"}, fmt(p.max_abs_error, 3)), el("td", {class: "num"}, fmt(p.max_rel_error, 3)),
        el("td", {class: "num"}, JSON.stringify(p.worst_index)), el("td", {class: "num"}, fmt(p.analytic_at_worst, 8)),
        el("td", {class: "num"}, fmt(p.numerical_at_worst, 8)), el("td", {class: "num"}, fmt(p.error_estimate, 3)),
        el("td", {class: "num"}, fmt(p.convergence_order, 4))));
    }
    table.append(tbody);
    result.replaceChildren(line, el("div", {class: "table-wrap"}, table));
    // the failing parameters' analytic gradients, the worst element framed
    const failing = Object.entries(params).filter(([, p]) => !p.passed);
    if (!failing.length) {
      result.append(el("p", {class: "note"}, "Every checked element is within the tolerance."));
      return;
    }
    if (report.mode === "directional") {
      result.append(el("p", {class: "note"}, "Directional mode: the worst index is a direction number, not an element."));
      return;
    }
    const grads = (state.response && state.response.gradients) || {};
    for (const [name, p] of failing) {
      let g = grads[name];
      const id = "chart-gc-" + name;
      const node = el("div", {class: "chart", id, "data-parameter": name});
      charts.append(node);
      if (!Array.isArray(g) || depth(g) > 2 || !Array.isArray(p.worst_index)) {
        node.replaceChildren(el("p", {class: "note"}, `${name}: worst element ${JSON.stringify(p.worst_index)} (analytic ${fmt(p.analytic_at_worst)}, numerical ${fmt(p.numerical_at_worst)})`));
        continue;
      }
      const vector = depth(g) === 1;
      if (vector) g = [g];
      const [row, col] = vector ? [0, p.worst_index[0]] : p.worst_index;
      const rows = g.length, cols = g[0].length;
      const lay = layout(`∂L/∂${name}, analytic: ${p.failed ?? "some"} of ${p.checked} checked elements failed`,
                         `□ worst element ${JSON.stringify(p.worst_index)}: analytic ${fmt(p.analytic_at_worst)}, numerical ${fmt(p.numerical_at_worst)}`,
                         vector ? "i (element)" : "j (column)", vector ? "" : "i (row)",
                         {yaxis: matrixAxes(rows, {title: {text: vector ? "" : "i (row)"}, showticklabels: !vector}),
                          xaxis: {title: {text: vector ? "i (element)" : "j (column)"}, dtick: cols <= 30 ? 1 : undefined},
                          shapes: [{type: "rect", xref: "x", yref: "y", x0: col - 0.5, x1: col + 0.5, y0: row - 0.5, y1: row + 0.5,
                                    line: {color: "#d62728", width: 4}}]});
      lay.height = vector ? 230 : Math.min(480, 150 + 34 * rows);
      node.style.minHeight = lay.height + "px";
      Plotly.newPlot(node, [{type: "heatmap", z: g, colorscale: "RdBu", zmid: 0,
                             texttemplate: rows * cols <= 120 ? "%{z:.3g}" : undefined, textfont: {size: 10},
                             colorbar: {title: {text: `∂L/∂${name}`}}, x: range(cols), y: range(rows),
                             hovertemplate: (vector ? "i=%{x}" : "i=%{y}, j=%{x}") + "<br>analytic %{z:.6g}<extra></extra>"}], lay, CONFIG);
      node.dataset.worstRow = String(row);
      node.dataset.worstCol = String(col);
    }
  }

  async function reluKink() {
    const box = $("gradcheck-errors");
    clearErrors(box, $("check-fields"));
    let example;
    try {
      const r = await fetch("/docs/examples/gradcheck_relu_kink.json");
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      example = await r.json();
    } catch (e) {
      box.replaceChildren(el("div", {}, "Could not load examples/gradcheck_relu_kink.json: " + e.message));
      return;
    }
    const {problem, panels} = splitPanels(example);
    $("paste").value = JSON.stringify(example, null, 1);
    $("paste-box").open = true;
    writeFields($("check-fields"), {});
    fillPanels(panels);
    clearErrors($("paste-errors"), $("paste-box"));
    if (await showBody(problem, "paste")) await runGradcheck();
  }

  // ---- grading -------------------------------------------------------------------------------------
  async function runGrade() {
    state.lastAction = runGrade;
    const box = $("grade-errors");
    const form = $("grade-form");
    clearErrors(box, form);
    if (!state.problem) { box.replaceChildren(el("div", {}, "Draw or paste a problem first.")); return; }
    let submission;
    try {
      submission = JSON.parse($("submission").value);
    } catch (e) {
      showProblem(box, {title: "The submission is not JSON", detail: e.message}, null, $("submission"));
      bump("gradeRuns");
      return;
    }
    const tolerance = typedBody([{name: "rtol", type: "number"}, {name: "atol", type: "number"}],
                                {rtol: $("grade-rtol").value, atol: $("grade-atol").value});
    const body = {...state.problem, submission};
    if (Object.keys(tolerance).length) body.tolerance = tolerance;
    $("grade-run").disabled = true;
    try {
      const r = await apiPost("/v1/grade", stringify(body));
      if (!r.ok) {
        $("grade-result").replaceChildren();
        showProblem(box, r.problem, (pointer) => {
          if (pointer.startsWith("/tolerance/")) {
            const name = pointer.split("/")[2];
            const input = $("grade-" + name);
            return input ? {wrap: input.parentElement, err: $("grade-err-" + name)} : null;
          }
          return null;
        }, Array.isArray(r.problem.errors) && r.problem.errors.some((e) => String(e.pointer).startsWith("/submission")) ? $("submission") : null);
        return;
      }
      renderGrade(r.data);
    } finally {
      $("grade-run").disabled = false;
      bump("gradeRuns");
    }
  }
  function renderGrade(report) {
    const checks = Array.isArray(report.checks) ? report.checks : [];
    const verdict = el("span", {class: "verdict " + (report.passed ? "pass" : "fail"), id: "grade-verdict"},
                       report.passed ? "PASSED" : "FAILED");
    const head = ["check", "passed", "max |got − expected|", "max rel", "worst index", "expected there", "got there", "error", "diagnosis"];
    const tbody = el("tbody");
    for (const c of checks) {
      const d = c.diagnosis;
      const extra = d ? Object.entries(d).filter(([k]) => k !== "id" && k !== "detail").map(([k, val]) => `${k}: ${JSON.stringify(val)}`).join(", ") : "";
      tbody.append(el("tr", {class: c.passed ? "pass" : "fail", "data-check": c.name},
        el("th", {scope: "row"}, c.name), el("td", {}, c.passed ? "✓ pass" : "✗ FAIL"),
        el("td", {class: "num"}, fmt(c.max_abs_error, 3)), el("td", {class: "num"}, fmt(c.max_rel_error, 3)),
        el("td", {class: "num"}, JSON.stringify(c.worst_index ?? null)), el("td", {class: "num"}, fmt(c.expected_at_worst, 8)),
        el("td", {class: "num"}, fmt(c.got_at_worst, 8)), el("td", {}, c.error || ""),
        el("td", {class: "diagnosis"}, d ? el("strong", {}, d.id) : "", d && d.detail ? ": " + d.detail : "", extra ? ` (${extra})` : "")));
    }
    $("grade-result").replaceChildren(
      el("p", {}, verdict, ` · score ${fmt(report.score, 4)} (${checks.filter((c) => c.passed).length} of ${checks.length} checks)`),
      el("div", {class: "table-wrap"}, el("table", {class: "report", id: "grade-table"},
        el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {scope: "col"}, h)))), tbody)));
  }
  function exampleSubmission(kind) {
    const resp = state.response;
    const box = $("grade-errors");
    box.replaceChildren();
    if (!resp) { box.replaceChildren(el("div", {}, "Draw or paste a problem first.")); return; }
    let submission;
    if (kind === "reference") {
      submission = {loss: resp.loss, step_losses: resp.step_losses, gradients: resp.gradients};
    } else {
      const g = resp.gradients || {};
      if (!state.noBptt || !("b_h" in g)) {
        box.replaceChildren(el("div", {}, "This example needs b_h_terms and the lecture layout's gradients.b_h."));
        return;
      }
      submission = {loss: resp.loss, gradients: {b_h: state.noBptt}};
      if ("b_y" in g) submission.gradients.b_y = g.b_y;
    }
    $("submission").value = JSON.stringify(submission, null, 1);
  }

  // ---- start ---------------------------------------------------------------------------------------
  async function init() {
    setStatus("Loading the contract's fields (/explore/schema.json) …");
    try {
      const r = await fetch("/explore/schema.json");
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      state.schema = await r.json();
    } catch (e) {
      setStatus("Could not load /explore/schema.json: " + e.message, true);
      return;
    }
    if (!window.Plotly) { setStatus("plotly.min.js did not load (/explore/plotly.min.js).", true); return; }
    buildFields($("problem-fields"), state.schema.problems, "pf-");
    buildFields($("check-fields"), state.schema.check, "gc-");
    writeFields($("problem-fields"), queryValues(state.schema.problems));
    $("problem-form").addEventListener("submit", (e) => { e.preventDefault(); drawFromForm(true); });
    $("paste-run").addEventListener("click", runPaste);
    $("paste-current").addEventListener("click", () => {
      if (state.gradientsBody) $("paste").value = stringify(state.gradientsBody, 1);
    });
    $("relu-kink").addEventListener("click", reluKink);
    $("gradcheck-form").addEventListener("submit", (e) => { e.preventDefault(); runGradcheck(); });
    $("grade-form").addEventListener("submit", (e) => { e.preventDefault(); runGrade(); });
    $("grade-no-bptt").addEventListener("click", () => exampleSubmission("no_bptt"));
    $("grade-reference").addEventListener("click", () => exampleSubmission("reference"));
    $("sequence").addEventListener("change", () => { state.seq = Number($("sequence").value) || 0; render(); });
    $("auth").addEventListener("submit", (e) => {
      e.preventDefault();
      state.key = $("api-key").value.trim();
      try { sessionStorage.setItem(KEY_STORE, state.key); } catch (err) { /* memory only */ }
      $("auth-message").textContent = state.key ? "Key set for this tab." : "";
      if (state.lastAction) state.lastAction();
    });
    await drawFromForm(false);
  }
  init();
})();
