"use strict";
// The review page of an scclip segment run. Everything it shows comes from the JSON document in
// #report-data; every name in it (classes, files, reasons) is put on the page as text
// (textContent, setAttribute), never parsed as markup.
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const PAGE_SIZE = 120;
  const EVAL_ROWS = 100;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }
  function pct(x, digits) {
    return x === null || x === undefined ? "n/a" : (x * 100).toFixed(digits === undefined ? 1 : digits) + "%";
  }
  function num(x, digits) {
    return x === null || x === undefined ? "n/a" : Number(x).toFixed(digits === undefined ? 3 : digits);
  }
  function count(n) {
    return n === null || n === undefined ? "n/a" : Number(n).toLocaleString("en-US");
  }
  function nullLast(a, b) {
    if (a === null || a === undefined) return b === null || b === undefined ? 0 : 1;
    if (b === null || b === undefined) return -1;
    return a - b;
  }

  // --- the data, indexed -----------------------------------------------------------------------
  const classes = new Map(DATA.classes.map((c) => [c.index, c]));
  const className = (i) => (classes.has(i) ? classes.get(i).name : String(i));
  const classColor = (i) => (classes.has(i) ? classes.get(i).color : "#888888");
  const images = DATA.images;
  images.forEach((im, n) => {
    im.n = n;
    im.share = new Map(im.classes.map((c) => [c[0], c[2]]));
  });
  const evalRows = new Map();
  if (DATA.eval && DATA.eval.perImage) for (const row of DATA.eval.perImage) evalRows.set(row.key, row);
  const imageMiou = (im) => (evalRows.has(im.key) ? evalRows.get(im.key).mIoU : null);
  const imageByKey = new Map(images.map((im) => [im.key, im]));

  const state = { sort: "name", shareClass: null, filter: null, page: 0, view: images, detail: -1 };

  // --- header ---------------------------------------------------------------------------------
  function renderHeader() {
    $("title").textContent = DATA.title;
    const present = DATA.classSummary.length;
    const failures = DATA.failures.length;
    const config = new Map(DATA.config.rows);
    const parts = [
      count(images.length) + " images",
      present + " of " + DATA.classes.length + " classes present",
      count(failures) + (failures === 1 ? " failure" : " failures"),
    ];
    if (config.has("model")) parts.push("model " + config.get("model") + " (" + (config.get("pretrained") || "?") + ")");
    if (DATA.runs.length > 1) parts.push(DATA.runs.length + " run summaries (shards)");
    $("overview").textContent = parts.join(" · ");
    const notes = [];
    for (const run of DATA.runs) {
      if (run.status !== "finished") notes.push(run.file + ": status " + run.status + (run.error ? " (" + run.error + ")" : "") + "; the run may be incomplete");
    }
    if (!DATA.runs.length) notes.push("no summary.json found: the run's configuration is unknown");
    for (const problem of DATA.problems) notes.push(problem);
    if (notes.length) {
      const banner = $("banner");
      banner.hidden = false;
      banner.append(el("strong", null, "Notes"));
      const list = el("ul");
      for (const note of notes.slice(0, 50)) list.append(el("li", null, note));
      if (notes.length > 50) list.append(el("li", null, "... and " + (notes.length - 50) + " more"));
      banner.append(list);
    }
    const failTab = document.querySelector('[data-tab="failures"]');
    failTab.textContent = "Failures (" + failures + ")";
    if (DATA.eval) document.querySelector('[data-tab="evaluation"]').hidden = false;
  }

  function showTab(name) {
    for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
    for (const section of document.querySelectorAll("main section")) section.hidden = section.dataset.section !== name;
  }

  // --- gallery --------------------------------------------------------------------------------
  function fillClassSelects() {
    const byImages = DATA.classSummary.slice().sort((a, b) => b.images - a.images || a.index - b.index);
    for (const row of byImages) {
      const filter = el("option", null, "images with " + row.name + " (" + row.images + ")");
      filter.value = String(row.index);
      $("filter").append(filter);
      const share = el("option", null, row.name);
      share.value = String(row.index);
      $("share-class").append(share);
    }
    if (byImages.length) state.shareClass = byImages[0].index;
    if (DATA.eval && DATA.eval.perImage) $("sort").querySelector('[value="miou"]').hidden = false;
  }

  function computeView() {
    let list = state.filter === null ? images.slice() : images.filter((im) => im.share.has(state.filter));
    if (state.sort === "confidence") list.sort((a, b) => nullLast(a.meanConf, b.meanConf) || a.n - b.n);
    else if (state.sort === "share") {
      const k = state.shareClass;
      list.sort((a, b) => (b.share.get(k) || 0) - (a.share.get(k) || 0) || a.n - b.n);
    } else if (state.sort === "miou") list.sort((a, b) => nullLast(imageMiou(a), imageMiou(b)) || a.n - b.n);
    state.view = list;
  }

  function card(im, position) {
    const fig = el("figure", "card");
    fig.dataset.image = im.key;
    fig.tabIndex = 0;
    const box = el("div", "thumb");
    if (im.thumb) {
      const img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = "";
      img.src = im.thumb;
      box.append(img);
    } else box.append(el("span", "none", "no thumbnail"));
    fig.append(box);
    const caption = el("figcaption");
    caption.append(el("div", "name", im.key));
    const meta = ["confidence " + num(im.meanConf), im.classes.length + (im.classes.length === 1 ? " class" : " classes")];
    if (evalRows.has(im.key)) meta.push("mIoU " + num(imageMiou(im), 1));
    if (state.sort === "share" && state.shareClass !== null) meta.push(className(state.shareClass) + " " + pct(im.share.get(state.shareClass) || 0));
    caption.append(el("div", "meta", meta.join(" · ")));
    const chips = el("div", "chips");
    for (const c of im.classes.slice().sort((a, b) => b[1] - a[1]).slice(0, 3)) {
      const chip = el("span", "chip");
      const swatch = el("span", "swatch");
      swatch.style.background = classColor(c[0]);
      chip.append(swatch, document.createTextNode(className(c[0]) + " " + pct(c[2], 0)));
      chip.title = className(c[0]);
      chips.append(chip);
    }
    caption.append(chips);
    fig.append(caption);
    fig.addEventListener("click", () => openDetail(position));
    fig.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openDetail(position);
      }
    });
    return fig;
  }

  function renderGallery() {
    const view = state.view;
    const pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const start = state.page * PAGE_SIZE;
    const fragment = document.createDocumentFragment();
    view.slice(start, start + PAGE_SIZE).forEach((im, i) => fragment.append(card(im, start + i)));
    $("gallery").replaceChildren(fragment);
    const shown = view.length ? start + 1 + "–" + Math.min(start + PAGE_SIZE, view.length) : "0";
    $("count").textContent = shown + " of " + count(view.length) + " images" + (view.length !== images.length ? " (filtered from " + count(images.length) + ")" : "");
    $("page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function refresh(resetPage) {
    if (resetPage) state.page = 0;
    computeView();
    renderGallery();
  }

  function setFilter(index) {
    state.filter = index;
    $("filter").value = index === null ? "" : String(index);
    refresh(true);
    showTab("gallery");
  }

  // --- the full-size view --------------------------------------------------------------------
  function selectedView() {
    return document.querySelector('input[name="view"]:checked').value;
  }

  function openDetail(position) {
    if (position < 0 || position >= state.view.length) return;
    state.detail = position;
    const im = state.view[position];
    $("detail-title").textContent = im.key;
    $("detail-pos").textContent = position + 1 + " / " + state.view.length;
    $("detail-path").textContent = (im.path ? im.path + " · " : "") + im.width + " × " + im.height + " px";
    const available = { overlay: !!im.image, image: !!im.image, mask: true, confidence: !!im.conf };
    for (const input of document.querySelectorAll('input[name="view"]')) input.disabled = !available[input.value];
    if (!available[selectedView()]) document.querySelector('input[name="view"][value="mask"]').checked = true;
    const notes = [];
    if (!im.image) notes.push("the segmented image was not found when the report was made");
    if (!im.conf) notes.push("no confidence map (segment with --save-confidence)");
    $("view-note").textContent = notes.join("; ");
    const summary = ["mean confidence " + num(im.meanConf)];
    if (evalRows.has(im.key)) {
      const row = evalRows.get(im.key);
      summary.push("mIoU " + num(row.mIoU, 1) + "%", "pixel accuracy " + num(row.aAcc, 1) + "%");
    }
    $("detail-summary").textContent = summary.join(" · ");
    renderDetailClasses(im);
    updateStage();
    $("detail").hidden = false;
    $("detail-prev").disabled = position === 0;
    $("detail-next").disabled = position >= state.view.length - 1;
    $("detail-close").focus();
  }

  function updateStage() {
    if (state.detail < 0) return;
    const im = state.view[state.detail];
    const mode = selectedView();
    const base = $("stage-base");
    const layer = $("stage-layer");
    const source = mode === "mask" ? im.mask : mode === "confidence" ? im.conf : im.image;
    if (base.getAttribute("src") !== source) base.src = source;
    layer.hidden = mode !== "overlay";
    if (mode === "overlay") {
      if (layer.getAttribute("src") !== im.mask) layer.src = im.mask;
      layer.style.opacity = String(Number($("opacity").value) / 100);
    }
  }

  function renderDetailClasses(im) {
    const table = $("detail-classes");
    const ious = new Map();
    if (evalRows.has(im.key)) for (const [index, iou] of evalRows.get(im.key).classes) ious.set(index, iou);
    const head = el("tr");
    const columns = [["class", ""], ["pixels", "num"], ["fraction", "num"], ["mean confidence", "num"]];
    if (ious.size) columns.push(["IoU", "num"]);
    for (const [name, cls] of columns) head.append(el("th", cls, name));
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    for (const c of im.classes.slice().sort((a, b) => b[1] - a[1])) {
      const tr = el("tr");
      const name = el("td", "text");
      const swatch = el("span", "swatch");
      swatch.style.background = classColor(c[0]);
      name.append(swatch, document.createTextNode(" " + className(c[0])));
      tr.append(name, el("td", "num", count(c[1])), el("td", "num", pct(c[2])), el("td", "num", num(c[3])));
      if (ious.size) tr.append(el("td", "num", ious.has(c[0]) ? num(ious.get(c[0]), 1) + "%" : "–"));
      tbody.append(tr);
    }
    table.replaceChildren(thead, tbody);
  }

  function closeDetail() {
    $("detail").hidden = true;
    state.detail = -1;
  }

  function openByKey(key) {
    let position = state.view.findIndex((im) => im.key === key);
    if (position < 0) {
      state.filter = null;
      $("filter").value = "";
      refresh(true);
      position = state.view.findIndex((im) => im.key === key);
    }
    openDetail(position);
  }

  // --- class summary ------------------------------------------------------------------------
  function barChart(title, rows, opts) {
    const figure = el("figure", "chart");
    figure.append(el("figcaption", null, title));
    const rowHeight = 20;
    const nameWidth = 190;
    const barWidth = 300;
    const valueWidth = 70;
    const chart = svg("svg", { width: nameWidth + barWidth + valueWidth, height: rows.length * rowHeight + 6, role: "img" });
    chart.append(Object.assign(svg("title"), { textContent: title }));
    const max = opts.max || Math.max(1e-12, ...rows.map((r) => opts.value(r) || 0));
    rows.forEach((row, i) => {
      const y = i * rowHeight + 3;
      const group = svg("g", { class: "row" });
      const tip = svg("title");
      tip.textContent = row.name + ": " + opts.label(row);
      group.append(tip);
      const label = row.name.length > 26 ? row.name.slice(0, 25) + "…" : row.name;
      const name = svg("text", { x: nameWidth - 20, y: y + 14, "text-anchor": "end", class: "name" });
      name.textContent = label;
      group.append(name);
      group.append(svg("rect", { x: nameWidth - 14, y: y + 4, width: 10, height: 10, fill: classColor(row.index), stroke: "#0005" }));
      const value = opts.value(row);
      if (value !== null && value !== undefined) {
        const width = Math.max(value > 0 ? 1 : 0, (value / max) * barWidth);
        group.append(svg("rect", { x: nameWidth, y: y + 3, width: width.toFixed(1), height: rowHeight - 6, fill: opts.color || "#2f6fdb", rx: 2 }));
      }
      const text = svg("text", { x: nameWidth + barWidth + 6, y: y + 14, class: "value" });
      text.textContent = opts.label(row);
      group.append(text);
      if (opts.onClick) group.addEventListener("click", () => opts.onClick(row));
      chart.append(group);
    });
    figure.append(chart);
    return figure;
  }

  function renderClasses() {
    const box = $("class-charts");
    const rows = DATA.classSummary;
    if (!rows.length) {
      box.append(el("p", "muted", "No class is present in any image."));
      return;
    }
    const filterTo = (row) => setFilter(row.index);
    box.append(
      barChart("Images containing the class", rows.slice().sort((a, b) => b.images - a.images || a.index - b.index), {
        value: (r) => r.images, label: (r) => count(r.images), max: Math.max(1, images.length), onClick: filterTo,
      }),
      barChart("Share of all pixels", rows.slice().sort((a, b) => b.fraction - a.fraction || a.index - b.index), {
        value: (r) => r.fraction, label: (r) => pct(r.fraction), onClick: filterTo, color: "#3b8f6b",
      }),
      barChart("Mean confidence (pixel-weighted)", rows.slice().sort((a, b) => nullLast(a.mean_confidence, b.mean_confidence) || a.index - b.index), {
        value: (r) => r.mean_confidence, label: (r) => num(r.mean_confidence), max: 1, onClick: filterTo, color: "#c07a1c",
      }),
    );
    box.append(el("p", "muted", "Click a class to see the images that contain it."));
  }

  // --- failures -----------------------------------------------------------------------------
  function table(columns, rows) {
    const t = el("table", "table");
    const head = el("tr");
    for (const [name, cls] of columns) head.append(el("th", cls, name));
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    for (const cells of rows) {
      const tr = el("tr");
      cells.forEach((cell, i) => {
        const td = el("td", columns[i][1]);
        if (cell instanceof Node) td.append(cell);
        else td.textContent = cell === null || cell === undefined ? "" : String(cell);
        tr.append(td);
      });
      tbody.append(tr);
    }
    t.append(thead, tbody);
    return t;
  }

  function renderFailures() {
    const box = $("failures");
    if (!DATA.failures.length) {
      box.append(el("p", "muted", "No failures recorded."));
      return;
    }
    const several = new Set(DATA.failures.map((f) => f.file)).size > 1;
    const columns = [["input", "text"], ["stage", ""], ["reason", "text"]];
    if (several) columns.push(["recorded in", ""]);
    box.append(table(columns, DATA.failures.map((f) => (several ? [f.path, f.stage, f.reason, f.file] : [f.path, f.stage, f.reason]))));
  }

  // --- evaluation ---------------------------------------------------------------------------
  function renderEvaluation() {
    const ev = DATA.eval;
    if (!ev) return;
    const box = $("evaluation");
    box.append(el("p", "headline", "mIoU " + num(ev.mIoU, 2) + "% · mAcc " + num(ev.mAcc, 2) + "% · aAcc " + num(ev.aAcc, 2) + "% · " + count(ev.numImages) + " images"));
    for (const note of ev.notes) box.append(el("p", "muted", note));
    const perClass = ev.perClass.map((row, index) => ({ index: index, name: row.name, iou: row.iou }));
    box.append(barChart("IoU per class", perClass, {
      value: (r) => r.iou, label: (r) => (r.iou === null ? "n/a" : num(r.iou, 1) + "%"), max: 100,
    }));
    box.append(el("h2", null, "Images, worst mIoU first"));
    if (!ev.perImage) {
      box.append(el("p", "muted", "This evaluation JSON has no per-image scores; run scclip eval --json again with this version of scclip."));
      return;
    }
    const rows = ev.perImage.slice().sort((a, b) => nullLast(a.mIoU, b.mIoU) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const holder = el("div");
    box.append(holder);
    let shown = EVAL_ROWS;
    const render = () => {
      const cells = rows.slice(0, shown).map((row, i) => {
        let name = row.key;
        if (imageByKey.has(row.key)) {
          name = el("button", "linkish", row.key);
          name.type = "button";
          name.addEventListener("click", () => openByKey(row.key));
        }
        return [i + 1, name, row.mIoU === null ? "n/a" : num(row.mIoU, 1) + "%", row.aAcc === null ? "n/a" : num(row.aAcc, 1) + "%"];
      });
      const parts = [table([["#", "num"], ["image", "text"], ["mIoU", "num"], ["pixel accuracy", "num"]], cells)];
      if (rows.length > shown) {
        const more = el("button", null, "Show " + Math.min(EVAL_ROWS * 10, rows.length - shown) + " more of " + count(rows.length - shown));
        more.type = "button";
        more.addEventListener("click", () => {
          shown += EVAL_ROWS * 10;
          render();
        });
        parts.push(more);
      }
      holder.replaceChildren(...parts);
    };
    render();
  }

  // --- configuration ------------------------------------------------------------------------
  const KEY_SETTINGS = ["model", "pretrained", "method.name", "device", "precision", "num_classes", "protocol.short_side", "protocol.crop", "protocol.stride", "protocol.logit_scale", "protocol.prob_threshold", "protocol.area_threshold", "run.engine.name", "run.engine.workers", "run.inputs"];

  function renderConfig() {
    const box = $("config");
    box.append(el("h2", null, "Runs"));
    if (!DATA.runs.length) box.append(el("p", "muted", "No summary.json found."));
    else {
      const t = (run, key) => (run.timing && run.timing[key] !== undefined ? run.timing[key] : null);
      box.append(table(
        [["file", "text"], ["status", ""], ["images", "num"], ["done", "num"], ["skipped", "num"], ["failed", "num"], ["load s", "num"], ["segment s", "num"], ["images/s", "num"], ["started", ""], ["finished", ""]],
        DATA.runs.map((run) => [run.file, run.status + (run.error ? ": " + run.error : ""), count(run.counts.images), count(run.counts.done), count(run.counts.skipped), count(run.counts.failed), num(t(run, "load_seconds"), 1), num(t(run, "segment_seconds"), 1), num(t(run, "images_per_second"), 2), run.started || "", run.finished || ""]),
      ));
    }
    const rows = new Map(DATA.config.rows);
    const key = KEY_SETTINGS.filter((k) => rows.has(k));
    if (key.length) {
      box.append(el("h2", null, "Settings"));
      box.append(table([["setting", ""], ["value", "text"]], key.map((k) => [k, rows.get(k)])));
    }
    if (DATA.config.differs.length) {
      box.append(el("h2", null, "Settings that differ between the run summaries"));
      box.append(table([["setting", ""], ["values (in the order of the runs above)", "text"]], DATA.config.differs.map(([k, values]) => [k, values.map((v) => (v === null ? "–" : v)).join(" | ")])));
    }
    if (DATA.config.rows.length) {
      const details = el("details");
      details.append(el("summary", null, "Full configuration (" + DATA.config.rows.length + " settings)"));
      details.append(table([["setting", ""], ["value", "text"]], DATA.config.rows));
      box.append(details);
    }
  }

  // --- wiring -------------------------------------------------------------------------------
  function wire() {
    for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
    $("sort").addEventListener("change", () => {
      state.sort = $("sort").value;
      $("share-label").hidden = state.sort !== "share";
      refresh(true);
    });
    $("share-class").addEventListener("change", () => {
      state.shareClass = Number($("share-class").value);
      refresh(true);
    });
    $("filter").addEventListener("change", () => {
      const value = $("filter").value;
      state.filter = value === "" ? null : Number(value);
      refresh(true);
    });
    $("prev").addEventListener("click", () => {
      state.page -= 1;
      renderGallery();
      window.scrollTo(0, 0);
    });
    $("next").addEventListener("click", () => {
      state.page += 1;
      renderGallery();
      window.scrollTo(0, 0);
    });
    for (const input of document.querySelectorAll('input[name="view"]')) input.addEventListener("change", updateStage);
    $("opacity").addEventListener("input", updateStage);
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-prev").addEventListener("click", () => openDetail(state.detail - 1));
    $("detail-next").addEventListener("click", () => openDetail(state.detail + 1));
    $("detail").addEventListener("click", (event) => {
      if (event.target === $("detail")) closeDetail();
    });
    document.addEventListener("keydown", (event) => {
      if ($("detail").hidden) return;
      if (event.key === "Escape") closeDetail();
      else if (event.key === "ArrowLeft") openDetail(state.detail - 1);
      else if (event.key === "ArrowRight") openDetail(state.detail + 1);
    });
  }

  renderHeader();
  fillClassSelects();
  wire();
  refresh(true);
  performance.mark("report-cards"); // the first page of cards is built (read by the benchmark)
  renderClasses();
  renderFailures();
  renderEvaluation();
  renderConfig();
  performance.mark("report-ready"); // every section is built
  document.body.dataset.ready = "true";
})();
