/* droneops station dashboard (no framework, no build step, no external resources).
 *
 * Data flow: GET /api/network once (map geometry in east/north metres about the network
 * centre), then the Server-Sent Events stream /api/stream: one "snapshot", then coalesced
 * "update" pushes and idle "ping"s. Everything shown is derived from S (below); rendering
 * happens at most once per animation frame. Staleness is recomputed every second here too,
 * so a silent feed greys drones out even when no push arrives.
 *
 * ?stats in the URL records frame times and publish->DOM lag in window.__dash.stats.
 */
"use strict";
(() => {
  const SVGNS = "http://www.w3.org/2000/svg";
  const LOW_BATTERY_PCT = 25;        // drone drawn in warning colour below this
  const EVENTS_SHOWN = 100;          // events kept in the feed
  const STATS_KEEP = 20000;          // samples kept per statistic
  const MARKER_FRACTION = 1 / 110;   // marker unit = this fraction of the visible map width
  const PAD_LABEL_ZOOM = 1.8;        // pad names appear from this zoom (relative to the whole network)
  const CROWDED_DRONES = 20;         // above this, zoomed out, only flagged drones carry a label
  const ZOOM_STEP = 1.5;

  const S = {
    net: null, nodes: {}, vehicles: {}, orders: {}, events: [], service: null, feed: null,
    station: null, fleet: "", staleAfter: 10, heartbeat: 2, offset: 0,
    lastMsg: 0, connected: false, everConnected: false, lastSnapshot: 0,
  };
  const params = new URLSearchParams(location.search);
  // lags: publish (vehicle timestamp) -> applied in an animation frame; feedLags: publish ->
  // received by the dashboard server (same clock when both run on one machine), ms
  const stats = params.has("stats") ? { frames: [], lags: [], feedLags: [], pushes: 0, vehicleUpdates: 0, renders: 0, bytes: 0 } : null;
  window.__dash = { state: S, stats };

  const $ = (id) => document.getElementById(id);
  const svg = $("map");
  const layers = {
    zones: $("layer-zones"), corridors: $("layer-corridors"), routes: $("layer-routes"),
    nodes: $("layer-nodes"), drones: $("layer-drones"),
  };

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function h(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  const serverNow = () => Date.now() / 1000 + S.offset;
  const fmtTime = (t) => {
    if (typeof t !== "number") return "";
    const d = new Date((t - S.offset) * 1000);
    return d.toTimeString().slice(0, 8);
  };
  function fmtCountdown(s) {
    if (typeof s !== "number" || !isFinite(s)) return "";
    if (s <= 0) return "due";
    s = Math.round(s);
    const hrs = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = String(m).padStart(hrs ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
    return hrs ? `${hrs}:${mm}:${ss}` : `${mm}:${ss}`;
  }
  const nodeName = (id) => (S.nodes[id] && S.nodes[id].name) || id || "";

  // ---------------------------------------------------------------- map geometry + zoom
  let view = { x: 0, y: 0, w: 1000, h: 1000 };
  let unit = 10;
  let fitWidth = 1000;
  function setView(v) {
    view = v;
    svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
    const rect = svg.getBoundingClientRect();
    const aspect = rect.width > 0 && rect.height > 0 ? rect.width / rect.height : 1;
    const shownW = Math.max(v.w, v.h * aspect);
    const newUnit = shownW * MARKER_FRACTION;
    if (Math.abs(newUnit - unit) / unit > 1e-6) { unit = newUnit; rescaleMarkers(); }
    svg.classList.toggle("far", fitWidth / v.w < PAD_LABEL_ZOOM);
  }
  function fit() {
    if (!S.net) return;
    const b = S.net.bounds;
    const w = Math.max(b.max_e_m - b.min_e_m, 100), hh = Math.max(b.max_n_m - b.min_n_m, 100);
    const m = 0.06 * Math.max(w, hh);
    fitWidth = w + 2 * m;
    setView({ x: b.min_e_m - m, y: -b.max_n_m - m, w: w + 2 * m, h: hh + 2 * m });
  }
  function zoomAt(factor, cx, cy) {
    const v = view;
    const nx = cx - (cx - v.x) / factor, ny = cy - (cy - v.y) / factor;
    setView({ x: nx, y: ny, w: v.w / factor, h: v.h / factor });
  }
  function toUser(clientX, clientY) {
    const pt = svg.createSVGPoint();
    pt.x = clientX; pt.y = clientY;
    const m = svg.getScreenCTM();
    return m ? pt.matrixTransform(m.inverse()) : { x: view.x + view.w / 2, y: view.y + view.h / 2 };
  }
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const p = toUser(e.clientX, e.clientY);
    zoomAt(e.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, p.x, p.y);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (e) => {
    drag = { p: toUser(e.clientX, e.clientY) };
    svg.setPointerCapture(e.pointerId);
    svg.classList.add("dragging");
  });
  svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const p = toUser(e.clientX, e.clientY);
    setView({ x: view.x - (p.x - drag.p.x), y: view.y - (p.y - drag.p.y), w: view.w, h: view.h });
  });
  const endDrag = () => { drag = null; svg.classList.remove("dragging"); };
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  const centre = () => ({ x: view.x + view.w / 2, y: view.y + view.h / 2 });
  $("zoom-in").onclick = () => { const c = centre(); zoomAt(ZOOM_STEP, c.x, c.y); };
  $("zoom-out").onclick = () => { const c = centre(); zoomAt(1 / ZOOM_STEP, c.x, c.y); };
  $("zoom-fit").onclick = fit;
  window.addEventListener("resize", () => setView(view));

  const markerEls = [];  // [g, x, y] of nodes and zone labels, rescaled on zoom
  function rescaleMarkers() {
    for (const [g, x, y] of markerEls) g.setAttribute("transform", `translate(${x},${y}) scale(${unit})`);
    for (const id in droneEls) placeDrone(droneEls[id]);
  }

  function drawNetwork(net) {
    S.net = net;
    for (const k in layers) if (k !== "drones") layers[k].textContent = "";
    markerEls.length = 0;
    S.nodes = {};
    for (const z of net.no_fly) {
      el("polygon", { class: "zone", points: z.ring.map(([e, n]) => `${e},${-n}`).join(" ") }, layers.zones);
      if (z.name) {
        const cx = z.ring.reduce((a, p) => a + p[0], 0) / z.ring.length;
        const cy = -z.ring.reduce((a, p) => a + p[1], 0) / z.ring.length;
        const g = el("g", {}, layers.zones);
        el("text", { class: "zone-label", "text-anchor": "middle" }, g).textContent = z.name;
        markerEls.push([g, cx, cy]);
      }
    }
    for (const c of net.corridors) {
      el("polyline", { class: "corridor", points: c.pts.map(([e, n]) => `${e},${-n}`).join(" ") }, layers.corridors);
    }
    for (const n of net.nodes) {
      S.nodes[n.id] = n;
      const mine = S.station === n.id ? " mine" : "";
      const g = el("g", { class: `node ${n.kind}${mine}`, "data-id": n.id }, layers.nodes);
      if (n.kind === "pad") el("circle", { r: 0.55 }, g);
      else if (n.kind === "station") el("rect", { x: -0.7, y: -0.7, width: 1.4, height: 1.4 }, g);
      else el("path", { d: "M0,-1.1 L1.1,0 L0,1.1 L-1.1,0 Z" }, g);
      const t = el("text", { x: 0.9, y: 0.45 }, g);
      t.textContent = n.kind === "pad" || !n.name || n.name === n.id ? n.name || n.id : `${n.name} (${n.id})`;
      const title = el("title", {}, g);
      title.textContent = `${n.kind} ${n.id}: ${n.name} (charging: ${n.charging})`;
      markerEls.push([g, n.e_m, -n.n_m]);
    }
    const sel = $("book-to");
    sel.textContent = "";
    for (const p of net.pads) {
      const o = h("option", null, p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id);
      o.value = p.id;
      sel.appendChild(o);
    }
    fit();
    rescaleMarkers();
  }

  // ---------------------------------------------------------------- drones
  const droneEls = {};
  function droneEl(id) {
    let d = droneEls[id];
    if (d) return d;
    const g = el("g", { class: "drone", "data-id": id }, layers.drones);
    el("circle", { class: "halo", r: 1.7 }, g);
    const arrow = el("path", { class: "arrow", d: "M0,-1.4 L0.95,1.05 L0,0.5 L-0.95,1.05 Z" }, g);
    const label = el("text", { x: 1.4, y: -0.5 }, g);
    const title = el("title", {}, g);
    d = droneEls[id] = { g, arrow, label, title, x: 0, y: 0, hdg: null, text: "", cls: "", tip: "" };
    return d;
  }
  function placeDrone(d) {
    d.g.setAttribute("transform", `translate(${d.x},${d.y}) scale(${unit})`);
  }
  function vehicleStale(v) {
    if (!S.connected) return "dashboard connection lost";
    if (S.feed && !S.feed.connected) return "dashboard not connected to the broker";
    if (S.service && S.service.state !== "online") return "fleet service offline";
    if (v.link === "down") return "link lost";
    if (typeof v.seen_at === "number") {
      const age = serverNow() - v.seen_at;
      if (age > S.staleAfter) return `no update for ${Math.round(age)} s`;
    }
    return null;
  }
  function vehicleStateText(v) {
    const parts = [];
    if (v.status) parts.push(v.status);
    if (v.flight_mode && v.armed) parts.push(v.flight_mode.toLowerCase());
    else if (v.landed_state && v.landed_state !== "on_ground" && v.landed_state !== "ON_GROUND") parts.push(String(v.landed_state).toLowerCase());
    return parts.join(" · ") || "?";
  }
  const pct = (v) => (typeof v.battery_pct === "number" ? `${Math.round(v.battery_pct)}%` : "?%");
  function renderDrone(id) {
    const v = S.vehicles[id];
    if (!v) {
      const d = droneEls[id];
      if (d) { d.g.remove(); delete droneEls[id]; }
      return;
    }
    if (typeof v.e_m !== "number") return;
    const d = droneEl(id);
    const x = v.e_m, y = -v.n_m;
    if (x !== d.x || y !== d.y) { d.x = x; d.y = y; placeDrone(d); }
    const hdg = typeof v.heading_deg === "number" ? v.heading_deg : 0;
    if (hdg !== d.hdg) { d.hdg = hdg; d.arrow.setAttribute("transform", `rotate(${hdg})`); }
    const stale = vehicleStale(v);
    const text = `${id} ${pct(v)}${stale ? " ⚠" : ""}`;
    if (text !== d.text) { d.text = text; d.label.textContent = text; }
    const cls = "drone" + (stale ? " stale" : "") + (v.inbound ? " inbound" : "") +
      (typeof v.battery_pct === "number" && v.battery_pct < LOW_BATTERY_PCT ? " lowbatt" : "");
    if (cls !== d.cls) { d.cls = cls; d.g.setAttribute("class", cls); }
    const title = `${id}: ${vehicleStateText(v)}, battery ${pct(v)}` +
      (v.order_id ? `, order ${v.order_id}` : "") + (stale ? ` — STALE: ${stale}` : "");
    if (title !== d.tip) { d.tip = title; d.title.textContent = title; }
  }

  // ---------------------------------------------------------------- tables
  const ORDER_RANK = { lost_contact: 0, in_flight: 0, diverted: 0, uploading: 1, assigned: 1, delivered: 2, planned: 3, received: 3 };
  function orderVehicleStale(o) {
    const v = o.vehicle_id && S.vehicles[o.vehicle_id];
    return v ? vehicleStale(v) : (S.connected ? null : "dashboard connection lost");
  }
  function etaText(o) {
    if (o.state === "completed") return "done";
    if (typeof o.eta !== "number") return "";
    if (o.state === "delivered") return "delivered";
    if (!(o.state in ORDER_RANK)) return "";
    return fmtCountdown(o.eta - serverNow());
  }
  function sortedOrders() {
    return Object.values(S.orders).sort((a, b) => {
      const ra = ORDER_RANK[a.state] ?? 9, rb = ORDER_RANK[b.state] ?? 9;
      if (ra !== rb) return ra - rb;
      if (ra < 9) return (a.eta ?? Infinity) - (b.eta ?? Infinity);
      return (b.updated_at ?? 0) - (a.updated_at ?? 0);
    });
  }
  const etaCells = [];   // [td, order_id] updated every second
  function renderOrders() {
    const body = $("orders-body");
    body.textContent = "";
    etaCells.length = 0;
    const list = sortedOrders();
    $("orders-count").textContent = `(${list.filter((o) => o.state in ORDER_RANK).length} open, ${list.length} shown)`;
    if (!list.length) {
      const tr = h("tr"); const td = h("td", "empty", "no orders yet"); td.colSpan = 5; tr.appendChild(td); body.appendChild(tr);
    }
    for (const o of list) {
      const stale = o.state in ORDER_RANK ? orderVehicleStale(o) : null;
      const tr = h("tr", (o.concerns_station ? "mine" : "") + (stale ? " stale" : ""));
      tr.dataset.id = o.order_id;
      const idCell = h("td", null, o.order_id); idCell.title = o.order_id; tr.appendChild(idCell);
      const toCell = h("td", null, nodeName(o.to)); toCell.title = `${nodeName(o.to)} (${o.to})`; tr.appendChild(toCell);
      const st = h("td"); st.appendChild(h("span", `state ${o.state}`, o.state)); tr.appendChild(st);
      if (o.reason && !(o.state in ORDER_RANK)) st.title = o.reason;
      tr.appendChild(h("td", null, o.vehicle_id || ""));
      const eta = h("td", "eta", etaText(o));
      if (typeof o.eta === "number") eta.title = `ETA ${fmtTime(o.eta)}`;
      tr.appendChild(eta);
      etaCells.push([eta, o.order_id]);
      body.appendChild(tr);
    }
  }
  // one row per drone, created once; only changed cells are written (100 drones at 5 pushes/s)
  const droneRows = {};
  let droneRowOrder = "";
  function setText(td, text, cls) {
    if (td.textContent !== text) td.textContent = text;
    if (cls !== undefined && td.className !== cls) td.className = cls;
  }
  function renderDroneTable(ids) {
    const body = $("drones-body");
    for (const id in droneRows) if (!S.vehicles[id]) { droneRows[id].tr.remove(); delete droneRows[id]; }
    const all = Object.keys(S.vehicles).sort();
    $("drones-count").textContent = `(${all.length})`;
    for (const id of ids || all) {
      const v = S.vehicles[id];
      if (!v) continue;
      let r = droneRows[id];
      if (!r) {
        const tr = h("tr"); tr.dataset.id = id;
        const cells = [h("td", null, id), h("td"), h("td"), h("td")];
        const badge = h("span", "state");
        cells[1].appendChild(badge);
        for (const c of cells) tr.appendChild(c);
        r = droneRows[id] = { tr, badge, batt: cells[2], order: cells[3] };
      }
      const stale = vehicleStale(v);
      const rowCls = (v.inbound ? "mine" : "") + (stale ? " stale" : "");
      if (r.tr.className !== rowCls) r.tr.className = rowCls;
      setText(r.badge, stale ? `stale: ${stale}` : vehicleStateText(v), "state" + (stale ? " stale" : ""));
      setText(r.batt, pct(v));
      setText(r.order, v.order_id || "");
    }
    svg.classList.toggle("crowded", all.length > CROWDED_DRONES);
    const order = all.join("\n");
    if (order !== droneRowOrder) {   // a drone came or went: put the rows in order once
      droneRowOrder = order;
      for (const id of all) if (droneRows[id]) body.appendChild(droneRows[id].tr);
    }
  }
  function renderInbound() {
    const box = $("inbound-box");
    if (!S.station) { box.hidden = true; return; }
    box.hidden = false;
    $("inbound-station").textContent = nodeName(S.station);
    const ul = $("inbound-list");
    ul.textContent = "";
    const list = sortedOrders().filter((o) => o.inbound);
    if (!list.length) { ul.appendChild(h("li", "empty", "no drone on its way here")); return; }
    for (const o of list) {
      const stale = orderVehicleStale(o);
      const li = h("li", stale ? "stale" : "");
      li.dataset.id = o.order_id;
      const cd = h("span", "countdown", etaText(o));
      // the order's ETA is the delivery's: say so when the drone only lands here afterwards
      cd.title = o.to === S.station ? "arrival here (delivery ETA)" : `delivery at ${nodeName(o.to)} (ETA); it lands here afterwards`;
      li.appendChild(cd);
      etaCells.push([cd, o.order_id]);
      const what = o.to === S.station ? "delivery here" : `lands here after delivering to ${nodeName(o.to)} (countdown: delivery)`;
      li.appendChild(h("div", null, `${o.vehicle_id || "drone not yet assigned"} · ${what}`));
      li.appendChild(h("div", null, `order ${o.order_id} · ${o.state}${stale ? " · STALE: " + stale : ""}`));
      ul.appendChild(li);
    }
  }
  function renderRoutes() {
    layers.routes.textContent = "";
    for (const o of Object.values(S.orders)) {
      if (!(o.state in ORDER_RANK) || !o.route_pts || o.route_pts.length < 2) continue;
      const stale = orderVehicleStale(o);
      el("polyline", {
        class: "route" + (o.inbound ? " inbound" : "") + (stale ? " stale" : ""),
        points: o.route_pts.map(([e, n]) => `${e},${-n}`).join(" "), "data-order": o.order_id,
      }, layers.routes);
    }
  }
  const EVENT_FIELDS = ["vehicle_id", "order_id", "to", "node", "state", "reason", "message"];
  function eventLine(ev) {
    const li = h("li", ev.concerns_station ? "mine" : "");
    li.appendChild(h("span", "t", fmtTime(ev.timestamp ?? ev.received_at)));
    li.appendChild(h("span", `k ${ev.kind || ""}`, ev.kind || "event"));
    const bits = [];
    for (const k of EVENT_FIELDS) if (ev[k] !== undefined && ev[k] !== null && ev[k] !== "") {
      bits.push(k === "reason" || k === "message" ? String(ev[k]) : `${k.replace("_id", "")} ${ev[k]}`);
    }
    li.appendChild(document.createTextNode(bits.join(" · ")));
    return li;
  }
  let renderedEventSeq = 0;
  function renderEvents(full) {
    const ol = $("events");
    if (full) { ol.textContent = ""; renderedEventSeq = 0; }
    for (const ev of S.events) {
      if (ev.seq <= renderedEventSeq) continue;
      ol.insertBefore(eventLine(ev), ol.firstChild);
      renderedEventSeq = ev.seq;
    }
    while (ol.children.length > EVENTS_SHOWN) ol.removeChild(ol.lastChild);
    if (!ol.children.length) ol.appendChild(h("li", "empty", "no events yet"));
    else { const e = ol.querySelector(".empty"); if (e) e.remove(); }
  }

  // ---------------------------------------------------------------- status + banners
  function pill(id, cls, text, title) {
    const p = $(id);
    p.className = `pill ${cls}`;
    p.textContent = text;
    if (title) p.title = title;
  }
  function renderStatus() {
    const banners = [];
    if (!S.connected && !S.everConnected) {
      banners.push(["warn", "Connecting to the dashboard…"]);
      pill("link-pill", "unknown", "page: connecting");
    } else if (!S.connected) {
      const since = S.lastMsg ? ` (last data at ${new Date(S.lastMsg).toTimeString().slice(0, 8)})` : "";
      banners.push(["bad", `Connection to the dashboard lost, reconnecting${since}. Everything shown may be out of date.`]);
      pill("link-pill", "bad", "page: reconnecting");
    } else pill("link-pill", "ok", "page: live");
    const f = S.feed;
    if (!f || !S.connected) pill("feed-pill", "unknown", "broker: ?", "unknown while the page is not connected");
    else if (f.connected) pill("feed-pill", "ok", "broker: connected", `${f.broker} as ${f.username || "anonymous"}`);
    else {
      pill("feed-pill", "bad", "broker: DOWN", f.error || "");
      if (S.connected) banners.push(["bad", `The dashboard cannot reach the MQTT broker${f.error ? " (" + f.error + ")" : ""} — data shown is not updating.`]);
    }
    if (f && f.ha_discovery && f.ha_discovery.startsWith("refused")) banners.push(["warn", `Home Assistant discovery ${f.ha_discovery}`]);
    if (f && f.denied && f.denied.length) banners.push(["warn", `The broker refused these subscriptions for this account: ${f.denied.join(", ")}`]);
    const svc = S.service;
    if (!svc) {
      pill("service-pill", "unknown", "service: no status");
      if (S.connected && f && f.connected) banners.push(["warn", "No status from the fleet service yet (it may never have run on this broker)."]);
    } else if (!S.connected && svc.state === "online") pill("service-pill", "unknown", `service: ${svc.state}?`, "last known state");
    else if (svc.state === "online") pill("service-pill", "ok", "service: online");
    else {
      pill("service-pill", "bad", "service: OFFLINE");
      // a clean shutdown stamps its time; the last will (a crash) has none: say when it was noticed
      const when = svc.timestamp ? ` since ${fmtTime(svc.timestamp)}`
        : svc.changed_at ? ` (noticed at ${fmtTime(svc.changed_at)})` : "";
      banners.push(["bad", `Fleet service OFFLINE${when}${svc.reason ? " (" + svc.reason + ")" : ""} — drone positions and orders are not being updated; bookings are not possible.`]);
    }
    const box = $("banners");
    box.textContent = "";
    for (const [cls, text] of banners) box.appendChild(h("div", `banner ${cls}`, text));
    $("book-submit").disabled = bookingBusy;
  }

  // ---------------------------------------------------------------- applying data
  const dirty = { vehicles: new Set(), orders: false, events: false, eventsFull: false, status: false, all: false };
  let frameRequested = false;
  let pendingLags = [];
  function schedule() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(render);
  }
  function render() {
    frameRequested = false;
    if (dirty.all) {
      for (const id in droneEls) if (!S.vehicles[id]) renderDrone(id);
      for (const id in S.vehicles) renderDrone(id);
      dirty.orders = dirty.status = true;
    } else for (const id of dirty.vehicles) renderDrone(id);
    if (dirty.all || dirty.orders) renderDroneTable();
    else if (dirty.vehicles.size) renderDroneTable(dirty.vehicles);
    if (dirty.orders || dirty.all) { renderOrders(); renderInbound(); renderRoutes(); }
    if (dirty.events || dirty.eventsFull) renderEvents(dirty.eventsFull);
    if (dirty.status) renderStatus();
    dirty.vehicles.clear();
    dirty.orders = dirty.events = dirty.eventsFull = dirty.status = dirty.all = false;
    if (stats) {
      stats.renders++;
      const now = Date.now() / 1000;
      for (const t of pendingLags) stats.lags.push((now - t) * 1000);
      for (const k of ["lags", "feedLags"]) if (stats[k].length > STATS_KEEP) stats[k].splice(0, stats[k].length - STATS_KEEP);
      pendingLags = [];
    }
  }
  function setOffset(serverTime) {
    if (typeof serverTime === "number") S.offset = serverTime - Date.now() / 1000;
  }
  function mergeVehicles(vs) {
    for (const id in vs) {
      const v = vs[id];
      if (v === null) delete S.vehicles[id];
      else {
        S.vehicles[id] = v;
        if (stats && typeof v.timestamp === "number") {
          pendingLags.push(v.timestamp - S.offset);
          if (typeof v.seen_at === "number") stats.feedLags.push((v.seen_at - v.timestamp) * 1000);
        }
      }
      dirty.vehicles.add(id);
    }
    if (stats) stats.vehicleUpdates += Object.keys(vs).length;
  }
  function applySnapshot(d) {
    setOffset(d.server_time);
    S.station = d.station; S.fleet = d.fleet; S.staleAfter = d.stale_after_s; S.heartbeat = d.heartbeat_s;
    S.service = d.service; S.feed = d.feed;
    S.vehicles = {}; mergeVehicles(d.vehicles || {});
    S.orders = d.orders || {};
    S.events = (d.events || []).slice(-EVENTS_SHOWN);
    $("fleet-name").textContent = `· fleet ${d.fleet}`;
    const st = $("station-name");
    if (d.station) { st.hidden = false; st.textContent = `station ${nodeName(d.station)}`; }
    else st.hidden = true;
    for (const g of layers.nodes.children) g.classList.toggle("mine", g.dataset.id === d.station);
    dirty.all = dirty.eventsFull = true;
    schedule();
  }
  function applyUpdate(d) {
    setOffset(d.server_time);
    if (stats) stats.pushes++;
    if (d.vehicles) mergeVehicles(d.vehicles);
    if (d.orders) {
      for (const id in d.orders) { if (d.orders[id] === null) delete S.orders[id]; else S.orders[id] = d.orders[id]; }
      dirty.orders = true;
    }
    if (d.events) { S.events.push(...d.events); if (S.events.length > EVENTS_SHOWN) S.events.splice(0, S.events.length - EVENTS_SHOWN); dirty.events = true; }
    if ("service" in d) { S.service = d.service; dirty.status = true; dirty.all = true; }
    if ("feed" in d) { S.feed = d.feed; dirty.status = true; dirty.all = true; }
    schedule();
  }

  // ---------------------------------------------------------------- the stream
  let es = null;
  function markAlive() {
    S.lastMsg = Date.now();
    if (!S.connected) { S.connected = true; S.everConnected = true; dirty.all = dirty.status = true; schedule(); }
  }
  function markLost() {
    if (S.connected) { S.connected = false; dirty.all = dirty.status = true; schedule(); }
  }
  function connect() {
    if (es) es.close();
    es = new EventSource("/api/stream");
    es.addEventListener("snapshot", (e) => { markAlive(); applySnapshot(JSON.parse(e.data)); });
    es.addEventListener("update", (e) => {
      markAlive();
      if (stats) stats.bytes += e.data.length;
      applyUpdate(JSON.parse(e.data));
    });
    es.addEventListener("ping", (e) => {
      markAlive();
      const d = JSON.parse(e.data);
      setOffset(d.server_time);
      if (JSON.stringify(d.feed) !== JSON.stringify(S.feed)) { S.feed = d.feed; dirty.all = dirty.status = true; schedule(); }
    });
    es.onerror = () => {
      markLost();
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }

  // once a second: clock, countdowns, staleness by age, silent-stream detection
  function tick() {
    $("clock").textContent = new Date().toTimeString().slice(0, 8);
    for (const [td, id] of etaCells) { const o = S.orders[id]; if (o) td.textContent = etaText(o); }
    updateBookingLine();
    if (S.connected && Date.now() - S.lastMsg > 3 * S.heartbeat * 1000) {
      markLost();
      connect();   // the stream went silent: drop it and start a new one
    }
    // staleness by age changes without any message: re-render when a flag flips
    let flips = false;
    for (const id in S.vehicles) {
      const d = droneEls[id];
      const stale = !!vehicleStale(S.vehicles[id]);
      if (d && stale !== d.cls.includes(" stale")) { dirty.vehicles.add(id); flips = true; }
    }
    if (flips) { dirty.orders = true; schedule(); }
  }

  // ---------------------------------------------------------------- booking
  let draftId = null, bookingBusy = false, booked = null;
  function newOrderId() {
    const d = new Date();
    const p2 = (n) => String(n).padStart(2, "0");
    const stamp = `${d.getUTCFullYear()}${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}${p2(d.getUTCSeconds())}`;
    const rnd = Math.floor(Math.random() * 0x10000).toString(16).padStart(4, "0");
    return `${S.station || "dash"}-${stamp}-${rnd}`;
  }
  function showResult(cls, text) {
    const box = $("book-result");
    box.textContent = "";
    box.appendChild(h("span", cls, text));
  }
  function updateBookingLine() {
    if (!booked) return;
    const o = S.orders[booked.order_id];
    const eta = o && typeof o.eta === "number" ? o.eta : booked.eta;
    const state = o ? o.state : booked.state;
    if (state === "rejected") { showResult("bad", `Order ${booked.order_id} rejected: ${(o && o.reason) || "no reason given"}`); return; }
    let text = `Order ${booked.order_id} accepted${state ? " · " + state : ""}`;
    if (typeof eta === "number" && state !== "completed") text += ` · ETA ${fmtTime(eta)} (${fmtCountdown(eta - serverNow())})`;
    showResult("ok", text);
  }
  for (const id of ["book-to", "book-kg", "book-priority"]) $(id).addEventListener("change", () => { draftId = null; });
  $("book-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (bookingBusy) return;
    if (!draftId) draftId = newOrderId();   // kept across a timed-out attempt: a retry is the same order
    const body = {
      to: $("book-to").value, payload_kg: parseFloat($("book-kg").value),
      priority: parseInt($("book-priority").value, 10), order_id: draftId,
    };
    bookingBusy = true; $("book-submit").disabled = true;
    booked = null;
    showResult("", `Sending order ${draftId}…`);
    try {
      const r = await fetch("/api/orders", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const j = await r.json();
      if (j.accepted) {
        booked = { order_id: j.order_id || draftId, eta: j.eta, state: j.state };
        draftId = null;
        updateBookingLine();
      } else {
        showResult("bad", `Not booked: ${j.reason || "no reason given"}${j.code ? " [" + j.code + "]" : ""}`);
        if (!(r.status === 504 || r.status === 503)) draftId = null;   // definite answer: next try is a new order
      }
    } catch (e) {
      showResult("bad", `Could not reach the dashboard (${e.message}); try again`);
    } finally {
      bookingBusy = false; $("book-submit").disabled = false;
    }
  });

  // ---------------------------------------------------------------- start
  if (stats) {
    let last = performance.now();
    const loop = (t) => { stats.frames.push(t - last); last = t; if (stats.frames.length > STATS_KEEP) stats.frames.shift(); requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
  }
  async function start() {
    renderStatus();
    for (;;) {
      try {
        const r = await fetch("/api/network");
        if (r.ok) { drawNetwork(await r.json()); break; }
      } catch (e) { /* dashboard not reachable yet */ }
      await new Promise((res) => setTimeout(res, 2000));
    }
    connect();
    setInterval(tick, 1000);
  }
  start();
})();
