/* medseg-agent annotator: the page talks only to the documented HTTP API (/v1/app/*, /health).
 * Plain JavaScript, no build step, no external resources. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const COLORS = { mask: [34, 211, 91], edge: [120, 255, 160], positive: "#22d35b", negative: "#ff4d4d", box: "#ffd700" };
  const DRAG_PX = 5;

  // -- state --------------------------------------------------------------------------------------------
  const state = {
    token: null,
    info: null,
    image: null,          // {image_id, width, height, name, target, slice, ...}
    bitmap: null,         // ImageBitmap of the image
    volume: null,         // OpenedVolume
    episode: null,        // EpisodeOut of the current image
    episodes: {},         // image_id -> episode_id (come back to a slice's work)
    maskCanvas: null,
    view: { scale: 1, x: 0, y: 0 },
    pointer: null,        // {startX, startY, imgStart, button, dragging, pan}
    pending: null,        // a click or box drawn before the server answers
    space: false,
    agentRunning: false,
    queue: Promise.resolve(),
    lastLatencyMs: null,
  };
  window.medsegApp = state; // read by the browser tests

  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const viewport = $("viewport");

  // -- HTTP ---------------------------------------------------------------------------------------------
  function readToken() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (hash.get("token")) {
      sessionStorage.setItem("medseg-token", hash.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    state.token = sessionStorage.getItem("medseg-token");
  }

  async function api(path, { method = "GET", json, form, raw = false } = {}) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let body;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    if (form !== undefined) body = form;
    const response = await fetch(path, { method, headers, body });
    if (response.status === 401) {
      const token = prompt("This server needs its access token:");
      if (token) { state.token = token.trim(); sessionStorage.setItem("medseg-token", state.token); return api(path, { method, json, form, raw }); }
      throw new Error("missing or wrong token");
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { const data = await response.json(); if (data.detail) detail = data.detail; } catch (_) { /* not JSON */ }
      const error = new Error(detail); error.status = response.status; throw error;
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  /** Run operations one at a time, in the order they were asked for. */
  function enqueue(operation) {
    const run = state.queue.then(operation, operation);
    state.queue = run.catch(() => {});
    return run;
  }

  function setStatus(text, kind = "") {
    const el = $("status");
    el.textContent = text;
    el.className = `status ${kind}`;
  }

  function fail(error) {
    console.error(error);
    setStatus(error.message || String(error), "error");
  }

  // -- COCO RLE -> mask canvas ------------------------------------------------------------------------
  function rleCounts(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20; p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  function maskFromRle(rle) {
    const [h, w] = rle.size;
    const mask = new Uint8Array(h * w); // row-major
    const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
    let index = 0, value = 0;
    for (const n of counts) {
      if (value) {
        for (let i = index; i < index + n; i++) mask[(i % h) * w + ((i / h) | 0)] = 1; // column-major runs
      }
      index += n; value ^= 1;
    }
    return { mask, h, w };
  }

  function buildMaskCanvas(rle) {
    const { mask, h, w } = maskFromRle(rle);
    const off = state.maskCanvas && state.maskCanvas.width === w && state.maskCanvas.height === h
      ? state.maskCanvas : Object.assign(document.createElement("canvas"), { width: w, height: h });
    const octx = off.getContext("2d");
    const data = octx.createImageData(w, h);
    const px = new Uint32Array(data.data.buffer);
    const [r, g, b] = COLORS.mask, [er, eg, eb] = COLORS.edge;
    const fill = (255 << 24) | (b << 16) | (g << 8) | r;       // little-endian RGBA
    const edge = (255 << 24) | (eb << 16) | (eg << 8) | er;
    for (let y = 0; y < h; y++) {
      const row = y * w;
      for (let x = 0; x < w; x++) {
        const i = row + x;
        if (!mask[i]) continue;
        const border = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        px[i] = border ? edge : fill;
      }
    }
    octx.putImageData(data, 0, 0);
    state.maskCanvas = off;
  }

  // -- drawing ------------------------------------------------------------------------------------------
  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const { clientWidth: w, clientHeight: h } = viewport;
    canvas.width = Math.max(1, Math.round(w * dpr));
    canvas.height = Math.max(1, Math.round(h * dpr));
    draw();
  }

  function fit() {
    if (!state.image) return;
    const { clientWidth: vw, clientHeight: vh } = viewport;
    const scale = Math.min(vw / state.image.width, vh / state.image.height) * 0.96;
    state.view = { scale, x: (vw - state.image.width * scale) / 2, y: (vh - state.image.height * scale) / 2 };
    draw();
  }

  function toImage(clientX, clientY) {
    const rect = canvas.getBoundingClientRect();
    const { scale, x, y } = state.view;
    return [(clientX - rect.left - x) / scale, (clientY - rect.top - y) / scale];
  }

  function toScreen(ix, iy) {
    const { scale, x, y } = state.view;
    return [ix * scale + x, iy * scale + y];
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0b0d10";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    $("empty-hint").hidden = !!state.bitmap;
    if (!state.bitmap) return;
    const { scale, x, y } = state.view;
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * x, dpr * y);
    ctx.imageSmoothingEnabled = scale < 4;
    ctx.drawImage(state.bitmap, 0, 0);
    if (state.maskCanvas && $("show-mask").checked && state.episode && state.episode.mask_area > 0) {
      ctx.globalAlpha = Number($("opacity").value) / 100;
      ctx.drawImage(state.maskCanvas, 0, 0);
      ctx.globalAlpha = 1;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const episode = state.episode;
    if (episode) {
      const prompt = episode.prompt;
      if (prompt.box) drawBox(prompt.box, COLORS.box, []);
      prompt.points.forEach((p, i) => drawPoint(p, prompt.labels[i] === 1));
      const last = lastAgentAction(episode);
      if (last) drawAgentRing(last);
    }
    const pending = state.pending;
    if (pending && pending.kind === "box") drawBox(pending.box, COLORS.box, [6, 4]);
    if (pending && pending.kind === "point") drawPoint(pending.point, pending.positive, 0.6);
    $("sb-zoom").textContent = `${Math.round(scale * 100)}%`;
  }

  function drawBox([x1, y1, x2, y2], color, dash) {
    const [sx1, sy1] = toScreen(x1, y1), [sx2, sy2] = toScreen(x2, y2);
    ctx.save();
    ctx.setLineDash(dash);
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(0,0,0,.6)";
    ctx.strokeRect(sx1, sy1, sx2 - sx1, sy2 - sy1);
    ctx.lineWidth = 2; ctx.strokeStyle = color;
    ctx.strokeRect(sx1, sy1, sx2 - sx1, sy2 - sy1);
    ctx.restore();
  }

  function drawPoint([px, py], positive, alpha = 1) {
    const [sx, sy] = toScreen(px, py);
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.beginPath(); ctx.arc(sx, sy, 6.5, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? COLORS.positive : COLORS.negative; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
    ctx.fillStyle = "#000"; ctx.font = "bold 11px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(positive ? "+" : "−", sx, sy + 0.5);
    ctx.restore();
  }

  function drawAgentRing(turn) {
    const action = turn.action_pixels;
    ctx.save();
    ctx.setLineDash([4, 3]); ctx.lineWidth = 2; ctx.strokeStyle = "#cdbdff";
    if (action.name === "add_point") {
      const [sx, sy] = toScreen(...action.arguments.point_2d);
      ctx.beginPath(); ctx.arc(sx, sy, 13, 0, 2 * Math.PI); ctx.stroke();
    } else if (action.name === "add_bbox") {
      const [x1, y1, x2, y2] = action.arguments.bbox_2d;
      const [sx1, sy1] = toScreen(x1, y1), [sx2, sy2] = toScreen(x2, y2);
      ctx.strokeRect(sx1 - 5, sy1 - 5, sx2 - sx1 + 10, sy2 - sy1 + 10);
    }
    ctx.fillStyle = "#cdbdff"; ctx.font = "11px sans-serif";
    const [ax, ay] = action.name === "add_point" ? toScreen(...action.arguments.point_2d)
      : toScreen(action.arguments.bbox_2d[0], action.arguments.bbox_2d[1]);
    ctx.fillText(`agent, turn ${turn.turn}`, ax + 14, ay - 10);
    ctx.restore();
  }

  function lastAgentAction(episode) {
    const turns = episode.turns;
    const last = turns[turns.length - 1];
    return last && last.actor === "agent" && last.action_pixels && !last.error ? last : null;
  }

  // -- panels -------------------------------------------------------------------------------------------
  function describeTurn(t) {
    if (t.error) return `invalid reply (${t.error.kind})`;
    if (!t.action) return "–";
    const a = t.action_pixels ? t.action_pixels.arguments : {};
    const r = (v) => Math.round(v);
    if (t.name === "add_bbox") return `box [${a.bbox_2d.map(r).join(", ")}]`;
    if (t.name === "add_point") return `${a.point_type === "positive" ? "+" : "−"} click (${r(a.point_2d[0])}, ${r(a.point_2d[1])})`;
    if (t.name === "stop_action") return "stop: mask accepted";
    return t.name;
  }

  function renderPanels() {
    const episode = state.episode;
    const list = $("turns");
    list.innerHTML = "";
    const turns = episode ? episode.turns : [];
    turns.forEach((t, i) => {
      const li = document.createElement("li");
      li.className = `${t.error ? "error" : ""} ${i === turns.length - 1 ? "latest" : ""}`;
      const head = document.createElement("div"); head.className = "head";
      const num = document.createElement("span"); num.textContent = `${t.turn}.`;
      const actor = document.createElement("span"); actor.className = `actor ${t.actor}`; actor.textContent = t.actor;
      const what = document.createElement("span"); what.className = "what"; what.textContent = describeTurn(t);
      const score = document.createElement("span"); score.className = "score";
      score.textContent = t.tool_score == null ? "" : `score ${t.tool_score.toFixed(2)}`;
      head.append(num, actor, what, score);
      li.append(head);
      const why = t.error ? t.error.message : t.reasoning;
      if (why) { const d = document.createElement("div"); d.className = "why"; d.textContent = why; li.append(d); }
      list.append(li);
    });
    list.scrollTop = list.scrollHeight;
    const agentTurns = turns.filter((t) => t.actor === "agent");
    const lastAgent = agentTurns[agentTurns.length - 1];
    const says = $("agent-says");
    if (lastAgent) {
      says.classList.remove("muted");
      const text = lastAgent.reasoning || (lastAgent.error ? lastAgent.error.message : "");
      says.textContent = `Turn ${lastAgent.turn}: ${describeTurn(lastAgent)}` +
        (lastAgent.tool_score == null ? "" : ` (tool score ${lastAgent.tool_score.toFixed(2)})`) + (text ? `\n${text}` : "");
    } else {
      says.classList.add("muted");
      says.textContent = episode && episode.agent.kind !== "none" ? "The agent has not acted yet." : "No agent turn yet.";
    }
    $("sb-turns").textContent = episode ? `turn ${episode.interactions}/${episode.max_turns}` : "turn 0";
    $("sb-score").textContent = episode && episode.score != null ? `score ${episode.score.toFixed(3)}` : "score –";
    $("sb-area").textContent = episode && episode.mask_area ? `mask ${episode.mask_area} px` : "mask –";
    $("sb-latency").textContent = state.lastLatencyMs == null ? "–" : `click → overlay ${Math.round(state.lastLatencyMs)} ms`;
    $("undo").disabled = !(episode && episode.can_undo);
    $("redo").disabled = !(episode && episode.can_redo);
    $("reset").disabled = !(episode && episode.turns.length);
    $("save").disabled = !(episode && episode.mask_area > 0);
    $("download-mask").disabled = !episode;
    $("download-record").disabled = !episode;
    $("target").disabled = !!(episode && episode.turns.length);
    const banner = $("banner");
    if (episode && episode.done) {
      banner.hidden = false;
      const who = turns.length && turns[turns.length - 1].name === "stop_action" ? ` by the ${turns[turns.length - 1].actor}` : "";
      banner.textContent = `Episode ended (${episode.stop_reason.replace(/_/g, " ")}${who}). Undo to continue.`;
    } else banner.hidden = true;
    const saved = episode && episode.saved.length ? episode.saved[episode.saved.length - 1] : null;
    $("saved-info").textContent = saved ? `saved: ${saved.mask}` : "";
    $("saved-info").title = saved ? `${saved.mask} and the record in ${saved.store}` : "";
    updateAgentButtons();
  }

  function updateAgentButtons() {
    const kind = $("agent-kind").value;
    $("agent-openai").hidden = kind !== "openai";
    $("agent-hf").hidden = kind !== "hf";
    $("agent-buttons").hidden = kind === "none";
    const busy = state.agentRunning;
    const ended = state.episode && state.episode.done;
    $("agent-run").disabled = busy || !state.image || ended;
    $("agent-step").disabled = busy || !state.image || ended;
    $("agent-stop").disabled = !busy;
  }

  // -- episodes -----------------------------------------------------------------------------------------
  function agentSpec() {
    const kind = $("agent-kind").value;
    if (kind === "openai") return { kind, base_url: $("agent-url").value.trim() || null, model: $("agent-model").value.trim() || null };
    if (kind === "hf") return { kind, checkpoint: $("agent-checkpoint").value.trim() || null };
    return { kind: "none" };
  }

  function sameAgent(episodeAgent, spec) {
    if (episodeAgent.kind !== spec.kind) return false;
    if (spec.kind === "openai") return (!spec.base_url || spec.base_url === episodeAgent.base_url) && (!spec.model || spec.model === episodeAgent.model);
    if (spec.kind === "hf") return !spec.checkpoint || spec.checkpoint === episodeAgent.checkpoint;
    return true;
  }

  async function ensureEpisode({ needAgent = false } = {}) {
    if (!state.image) throw new Error("open an image first");
    const target = $("target").value.trim();
    if (!target) { $("target").focus(); throw new Error("type the target first (what to segment)"); }
    let episode = state.episode;
    const stale = episode && (episode.image_id !== state.image.image_id || (!episode.turns.length && episode.target !== target));
    if (!episode || stale) {
      const spec = agentSpec();
      setStatus(spec.kind === "none" ? "Starting the episode…" : "Starting the episode and the agent…");
      episode = await api("/v1/app/episodes", {
        method: "POST",
        json: { image_id: state.image.image_id, target, agent: spec, annotator: $("annotator").value.trim() },
      });
      state.episodes[state.image.image_id] = episode.episode_id;
      applyEpisode(episode);
    }
    if (needAgent && !sameAgent(episode.agent, agentSpec())) {
      episode = await api(`/v1/app/episodes/${episode.episode_id}/agent`, { method: "PUT", json: agentSpec() });
      applyEpisode(episode);
    }
    return episode;
  }

  function applyEpisode(episode) {
    state.episode = episode;
    buildMaskCanvas(episode.mask);
    state.pending = null;
    draw();
    renderPanels();
  }

  function markClick() {
    performance.clearMarks("medseg-click");
    performance.mark("medseg-click");
  }

  function markOverlay() {
    requestAnimationFrame(() => {
      performance.mark("medseg-overlay");
      const measure = performance.measure("medseg-click-to-overlay", "medseg-click", "medseg-overlay");
      state.lastLatencyMs = measure.duration;
      $("sb-latency").textContent = `click → overlay ${Math.round(measure.duration)} ms`;
    });
  }

  function personAction(kind, payload) {
    state.agentRunning = false;
    state.pending = { kind, ...payload };
    requestAnimationFrame(draw); // the request goes out first; the pending mark is drawn meanwhile
    return enqueue(async () => {
      try {
        const episode = await ensureEpisode();
        const path = kind === "box" ? "box" : "point";
        const body = kind === "box" ? { box: payload.box } : { point: payload.point, positive: payload.positive };
        const updated = await api(`/v1/app/episodes/${episode.episode_id}/${path}`, { method: "POST", json: body });
        applyEpisode(updated);
        if (kind === "point") markOverlay();
        setStatus(`${kind === "box" ? "Box" : payload.positive ? "Positive click" : "Negative click"} applied (server ${Math.round(updated.server_ms)} ms).`);
      } catch (error) {
        state.pending = null; draw(); fail(error);
      }
    });
  }

  function episodeCommand(name, label) {
    return enqueue(async () => {
      if (!state.episode) return;
      try {
        applyEpisode(await api(`/v1/app/episodes/${state.episode.episode_id}/${name}`, { method: "POST" }));
        setStatus(label);
      } catch (error) { fail(error); }
    });
  }

  async function agentTurn() {
    const episode = await ensureEpisode({ needAgent: true });
    setStatus("The agent is thinking…");
    const updated = await api(`/v1/app/episodes/${episode.episode_id}/agent`, { method: "POST" });
    applyEpisode(updated);
    const last = updated.turns[updated.turns.length - 1];
    setStatus(last.error ? `Agent reply was invalid: ${last.error.message}` : `Agent: ${describeTurn(last)}.`, last.error ? "error" : "");
    return updated;
  }

  function runAgent(continuous) {
    if (state.agentRunning) return;
    state.agentRunning = true;
    updateAgentButtons();
    enqueue(async () => {
      try {
        do {
          const episode = await agentTurn();
          if (episode.done) { setStatus(`The agent finished (${episode.stop_reason.replace(/_/g, " ")}). Correct it or save.`, "ok"); break; }
        } while (continuous && state.agentRunning);
      } catch (error) { fail(error); }
      state.agentRunning = false;
      updateAgentButtons();
    });
  }

  function save() {
    return enqueue(async () => {
      if (!state.episode) return;
      try {
        const episode = await api(`/v1/app/episodes/${state.episode.episode_id}/save`, { method: "POST" });
        applyEpisode(episode);
        const saved = episode.saved[episode.saved.length - 1];
        setStatus(`Saved ${saved.mask} and the record in ${saved.store}.`, "ok");
      } catch (error) { fail(error); }
    });
  }

  async function download(kind) {
    if (!state.episode) return;
    const id = state.episode.episode_id;
    const nifti = !!state.episode.slice;
    const path = kind === "record" ? `/v1/app/episodes/${id}/record` : `/v1/app/episodes/${id}/mask?format=${nifti ? "nifti" : "png"}`;
    try {
      const response = await api(path, { raw: true });
      const blob = await response.blob();
      const a = Object.assign(document.createElement("a"), {
        href: URL.createObjectURL(blob),
        download: `${state.image.name}_${kind === "record" ? "record.json" : nifti ? "mask.nii.gz" : "mask.png"}`,
      });
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    } catch (error) { fail(error); }
  }

  // -- images and volumes ---------------------------------------------------------------------------------
  async function showImage(opened, { keepView = false } = {}) {
    const response = await api(`/v1/app/images/${opened.image_id}.png`, { raw: true });
    const bitmap = await createImageBitmap(await response.blob());
    const sameSize = state.image && state.image.width === opened.width && state.image.height === opened.height;
    state.image = opened;
    state.bitmap = bitmap;
    state.episode = null;
    state.maskCanvas = null;
    if (opened.target && !$("target").value.trim()) $("target").value = opened.target;
    if (!keepView || !sameSize) fit(); else draw();
    const known = state.episodes[opened.image_id];
    if (known) {
      try { applyEpisode(await api(`/v1/app/episodes/${known}`)); } catch (_) { delete state.episodes[opened.image_id]; }
    }
    renderPanels();
  }

  async function openResult(opened) {
    if (opened.kind === "volume") {
      state.volume = opened;
      $("volume-controls").hidden = false;
      $("volume-name").textContent = `${opened.name} · ${opened.modality}`;
      fillContrast(opened);
      if (opened.target) $("target").value = opened.target;
      $("axis").value = "axial";
      setSliceRange(true);
      await loadSlice(false);
    } else {
      state.volume = null;
      $("volume-controls").hidden = true;
      if (opened.target) $("target").value = opened.target;
      await showImage(opened);
    }
    setStatus(`Opened ${opened.name}. Drag a box or click on the target${$("target").value ? "" : " (type the target first)"}.`);
  }

  function fillContrast(volume) {
    const select = $("contrast");
    select.innerHTML = "";
    const add = (value, label) => select.append(Object.assign(document.createElement("option"), { value, textContent: label }));
    add("pct:0.5:99.5", "percentiles 0.5–99.5 (MRI)");
    add("pct:1:99", "percentiles 1–99");
    add("pct:2:98", "percentiles 2–98");
    state.info.window_presets.forEach((name) => add(`win:${name}`, `CT window: ${name.replace(/_/g, " ")}`));
    add("custom", "CT window: custom W/L");
    const c = volume.contrast;
    select.value = c.mode === "window" && c.preset ? `win:${c.preset}` : "pct:0.5:99.5";
  }

  function setSliceRange(middle) {
    const axis = $("axis").value;
    const n = state.volume.slices[axis];
    const slider = $("slice");
    slider.max = String(n - 1);
    if (middle || Number(slider.value) > n - 1) slider.value = String(Math.floor(n / 2));
    $("slice-label").textContent = `${slider.value} / ${n - 1}`;
  }

  function contrastBody() {
    const value = $("contrast").value;
    $("custom-window").hidden = value !== "custom";
    if (value.startsWith("win:")) return { window: value.slice(4) };
    if (value === "custom") return { width: Number($("window-width").value), level: Number($("window-level").value) };
    const [, lo, hi] = value.split(":");
    return { percentiles: [Number(lo), Number(hi)] };
  }

  let sliceTimer = null;
  function scheduleSlice() {
    $("slice-label").textContent = `${$("slice").value} / ${$("slice").max}`;
    clearTimeout(sliceTimer);
    sliceTimer = setTimeout(() => enqueue(() => loadSlice(true).catch(fail)), 60);
  }

  async function loadSlice(keepView) {
    const body = { axis: $("axis").value, index: Number($("slice").value), ...contrastBody() };
    const opened = await api(`/v1/app/volumes/${state.volume.volume_id}/slice`, { method: "POST", json: body });
    await showImage(opened, { keepView });
  }

  async function openFiles(files) {
    if (!files.length) return;
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    const modality = $("upload-modality").value;
    if (modality) form.append("modality", modality);
    setStatus(`Uploading ${files.length > 1 ? `${files.length} files` : files[0].name}…`);
    await openResult(await api("/v1/app/open", { method: "POST", form }));
  }

  async function loadLibrary() {
    const entries = await api("/v1/app/library");
    const list = $("library");
    list.innerHTML = "";
    $("library-count").textContent = entries.length ? `(${entries.length})` : "";
    if (!entries.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "Empty: start the server with --data DIR, or build the demo (medseg-agent data build-demo).";
      list.append(li);
    }
    for (const entry of entries) {
      const li = document.createElement("li");
      li.dataset.entry = entry.entry_id;
      li.title = `${entry.dataset}: ${entry.name}`;
      const kind = document.createElement("span"); kind.className = "kind"; kind.textContent = entry.kind === "volume" ? "3-D" : entry.modality;
      const name = document.createElement("span"); name.textContent = entry.name;
      const target = document.createElement("span"); target.className = "target"; target.textContent = entry.target;
      li.append(kind, name, target);
      li.addEventListener("click", () => enqueue(async () => {
        document.querySelectorAll("#library li").forEach((el) => el.classList.toggle("active", el === li));
        $("target").value = "";
        $("target").disabled = false;
        setStatus(`Opening ${entry.name}…`);
        try { await openResult(await api(`/v1/app/library/${entry.entry_id}/open`, { method: "POST" })); } catch (error) { fail(error); }
      }));
      list.append(li);
    }
  }

  // -- pointer, wheel, keys -------------------------------------------------------------------------------
  function insideImage([x, y]) {
    return state.image && x >= 0 && y >= 0 && x <= state.image.width - 1 && y <= state.image.height - 1;
  }

  function clampToImage([x, y]) {
    return [Math.min(Math.max(x, 0), state.image.width - 1), Math.min(Math.max(y, 0), state.image.height - 1)];
  }

  viewport.addEventListener("contextmenu", (e) => e.preventDefault());

  viewport.addEventListener("pointerdown", (e) => {
    if (!state.image) return;
    viewport.focus();
    viewport.setPointerCapture(e.pointerId);
    const pan = e.button === 1 || (e.button === 0 && state.space);
    state.pointer = { startX: e.clientX, startY: e.clientY, imgStart: toImage(e.clientX, e.clientY), button: e.button,
      dragging: false, pan, view: { ...state.view } };
    if (pan) viewport.classList.add("panning");
    if (e.button === 0 && !pan) markClick();
  });

  viewport.addEventListener("pointermove", (e) => {
    if (state.image) {
      const [ix, iy] = toImage(e.clientX, e.clientY);
      $("sb-cursor").textContent = insideImage([ix, iy]) ? `x ${Math.round(ix)}  y ${Math.round(iy)}` : "";
    }
    const p = state.pointer;
    if (!p) return;
    const dx = e.clientX - p.startX, dy = e.clientY - p.startY;
    if (p.pan) {
      state.view.x = p.view.x + dx; state.view.y = p.view.y + dy; draw(); return;
    }
    if (p.button !== 0) return;
    if (!p.dragging && Math.hypot(dx, dy) > DRAG_PX) p.dragging = true;
    if (p.dragging) {
      const [x1, y1] = clampToImage(p.imgStart), [x2, y2] = clampToImage(toImage(e.clientX, e.clientY));
      state.pending = { kind: "box", box: [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)] };
      draw();
    }
  });

  viewport.addEventListener("pointerup", (e) => {
    const p = state.pointer;
    state.pointer = null;
    viewport.classList.remove("panning");
    if (!p || p.pan) return;
    if (p.button === 0 && p.dragging) {
      const box = state.pending.box;
      if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { state.pending = null; draw(); return; }
      personAction("box", { box });
      return;
    }
    const point = toImage(e.clientX, e.clientY);
    if (!insideImage(point)) return;
    if (p.button === 0) {
      const negative = e.shiftKey || e.altKey || $("negative-mode").checked;
      personAction("point", { point, positive: !negative });
    } else if (p.button === 2) {
      markClick();
      personAction("point", { point, positive: false });
    }
  });

  viewport.addEventListener("wheel", (e) => {
    if (!state.image) return;
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomAt(e.clientX - rect.left, e.clientY - rect.top, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });

  function zoomAt(sx, sy, factor) {
    const v = state.view;
    const scale = Math.min(Math.max(v.scale * factor, 0.05), 64);
    const ix = (sx - v.x) / v.scale, iy = (sy - v.y) / v.scale;
    state.view = { scale, x: sx - ix * scale, y: sy - iy * scale };
    draw();
  }

  function typing(target) {
    return target instanceof HTMLInputElement && !["range", "checkbox"].includes(target.type) ||
      target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === " " && !typing(e.target)) { state.space = true; e.preventDefault(); return; }
    if (typing(e.target)) return;
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    if (mod && key === "z" && !e.shiftKey) { e.preventDefault(); episodeCommand("undo", "Undone."); }
    else if ((mod && key === "z" && e.shiftKey) || (mod && key === "y")) { e.preventDefault(); episodeCommand("redo", "Redone."); }
    else if (mod && key === "s") { e.preventDefault(); save(); }
    else if (mod) return;
    else if (key === "z") episodeCommand("undo", "Undone.");
    else if (key === "y") episodeCommand("redo", "Redone.");
    else if (key === "r") episodeCommand("reset", "Reset (undo brings the turns back).");
    else if (key === "s") save();
    else if (key === "g") { if (!$("agent-buttons").hidden) runAgent(true); }
    else if (key === "t") { if (!$("agent-buttons").hidden) runAgent(false); }
    else if (e.key === "Escape") { state.agentRunning = false; $("help").hidden = true; updateAgentButtons(); }
    else if (key === "x") { $("negative-mode").checked = !$("negative-mode").checked; }
    else if (key === "m") { $("show-mask").checked = !$("show-mask").checked; draw(); }
    else if (e.key === "[" || e.key === "]") {
      const o = $("opacity"); o.value = String(Number(o.value) + (e.key === "]" ? 10 : -10)); o.dispatchEvent(new Event("input"));
    }
    else if (key === "f" || e.key === "0") fit();
    else if (e.key === "+" || e.key === "=") zoomAt(viewport.clientWidth / 2, viewport.clientHeight / 2, 1.25);
    else if (e.key === "-") zoomAt(viewport.clientWidth / 2, viewport.clientHeight / 2, 0.8);
    else if (state.volume && ["ArrowUp", "ArrowDown", "PageUp", "PageDown"].includes(e.key)) {
      e.preventDefault();
      const s = $("slice");
      s.value = String(Number(s.value) + (e.key === "ArrowUp" || e.key === "PageUp" ? 1 : -1));
      scheduleSlice();
    }
    else if (e.key === "?") $("help").hidden = false;
  });
  document.addEventListener("keyup", (e) => { if (e.key === " ") state.space = false; });

  // -- controls --------------------------------------------------------------------------------------------
  $("file-input").addEventListener("change", (e) => enqueue(() => openFiles([...e.target.files]).catch(fail)).then(() => { e.target.value = ""; }));
  $("dicom-input").addEventListener("change", (e) => enqueue(() => openFiles([...e.target.files]).catch(fail)).then(() => { e.target.value = ""; }));
  $("axis").addEventListener("change", () => { setSliceRange(true); scheduleSlice(); });
  $("slice").addEventListener("input", scheduleSlice);
  $("contrast").addEventListener("change", scheduleSlice);
  $("window-width").addEventListener("change", scheduleSlice);
  $("window-level").addEventListener("change", scheduleSlice);
  $("agent-kind").addEventListener("change", updateAgentButtons);
  $("agent-run").addEventListener("click", () => runAgent(true));
  $("agent-step").addEventListener("click", () => runAgent(false));
  $("agent-stop").addEventListener("click", () => { state.agentRunning = false; updateAgentButtons(); setStatus("The agent stops after this turn."); });
  $("undo").addEventListener("click", () => episodeCommand("undo", "Undone."));
  $("redo").addEventListener("click", () => episodeCommand("redo", "Redone."));
  $("reset").addEventListener("click", () => episodeCommand("reset", "Reset (undo brings the turns back)."));
  $("save").addEventListener("click", save);
  $("download-mask").addEventListener("click", () => download("mask"));
  $("download-record").addEventListener("click", () => download("record"));
  $("show-mask").addEventListener("change", draw);
  $("opacity").addEventListener("input", () => { $("opacity-label").textContent = `${$("opacity").value}%`; draw(); });
  $("help-button").addEventListener("click", () => { $("help").hidden = false; });
  $("help-close").addEventListener("click", () => { $("help").hidden = true; });
  $("annotator").addEventListener("change", () => localStorage.setItem("medseg-annotator", $("annotator").value.trim()));
  new ResizeObserver(resizeCanvas).observe(viewport);

  // -- start -------------------------------------------------------------------------------------------------
  async function start() {
    readToken();
    try {
      state.info = await api("/v1/app/info");
      $("tool-name").textContent = `tool: ${state.info.tool}`;
      $("annotator").value = localStorage.getItem("medseg-annotator") || state.info.annotator || "";
      if (state.info.agent.base_url) { $("agent-url").value = state.info.agent.base_url; }
      if (state.info.agent.model) { $("agent-model").value = state.info.agent.model; }
      if (state.info.agent.checkpoint) { $("agent-checkpoint").value = state.info.agent.checkpoint; }
      await loadLibrary();
      setStatus(state.info.library_warning || "Ready: open an image or pick one from the library.");
      document.body.dataset.ready = "true";
    } catch (error) { fail(error); }
    updateAgentButtons();
  }
  start();
})();
